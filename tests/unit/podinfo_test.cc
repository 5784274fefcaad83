#include "app/podinfo.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace irsafs {
namespace {

using Labels = std::map<std::string, std::string>;

// A temporary directory removed at the end of the test.
class PodInfoFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "podinfo_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& f : files_) ::unlink(f.c_str());
    ::rmdir((dir_ + "/subdir").c_str());
    ::rmdir(dir_.c_str());
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    files_.push_back(path);
    return path;
  }
  std::string dir_;
  std::vector<std::string> files_;
};

// What the kubelet writes: sorted keys, %q values, no newline after the last line.
constexpr std::string_view kLabels =
    "app=\"jupyter\"\n"
    "dominodatalab.com/irsa-workload-type=\"run\"\n"
    "pod-template-hash=\"5d4f8b7c9\"";

TEST(PodInfo, ParsesKubeletOutput) {
  const Labels labels = parse_pod_labels(kLabels);
  EXPECT_EQ(labels, (Labels{{"app", "jupyter"},
                            {"dominodatalab.com/irsa-workload-type", "run"},
                            {"pod-template-hash", "5d4f8b7c9"}}));
}

TEST(PodInfo, DecodesGoEscapes) {
  const Labels labels = parse_pod_labels(
      "quote=\"a\\\"b\"\n"
      "backslash=\"a\\\\b\"\n"
      "controls=\"\\n\\t\\r\\a\\b\\f\\v\"\n"
      "hex=\"\\x00\\x7f\\xff\"\n"
      "u=\"\\u00e9\\u2028\"\n"
      "bigu=\"\\U0001F600\"\n"
      "octal=\"\\101\\377\"\n"
      "utf8=\"\xc3\xa9t\xc3\xa9\"\n"
      "empty=\"\"\n");
  EXPECT_EQ(labels.at("quote"), "a\"b");
  EXPECT_EQ(labels.at("backslash"), "a\\b");
  EXPECT_EQ(labels.at("controls"), "\n\t\r\a\b\f\v");
  EXPECT_EQ(labels.at("hex"), std::string("\0\x7f\xff", 3));
  EXPECT_EQ(labels.at("u"), "\xc3\xa9\xe2\x80\xa8");
  EXPECT_EQ(labels.at("bigu"), "\xf0\x9f\x98\x80");
  EXPECT_EQ(labels.at("octal"), "A\xff");
  EXPECT_EQ(labels.at("utf8"), "\xc3\xa9t\xc3\xa9");
  EXPECT_EQ(labels.at("empty"), "");
  EXPECT_EQ(labels.size(), 9u);
}

TEST(PodInfo, SkipsMalformedLines) {
  const Labels labels = parse_pod_labels(
      "good=\"1\"\n"
      "\n"
      "no_equals_sign\n"
      "=\"no key\"\n"
      "unquoted=value\n"
      "unterminated=\"abc\n"
      "single_quote='x'\n"
      "trailing=\"x\" junk\n"
      "inner_quote=\"a\"b\"\n"
      "unknown_escape=\"\\q\"\n"
      "short_hex=\"\\x4\"\n"
      "bad_hex=\"\\xZZ\"\n"
      "short_u=\"\\u12\"\n"
      "surrogate=\"\\ud800\"\n"
      "too_big=\"\\U00110000\"\n"
      "bad_octal=\"\\400\"\n"
      "dangling_backslash=\"\\\"\n"
      "also_good=\"2\"\r\n");
  EXPECT_EQ(labels, (Labels{{"good", "1"}, {"also_good", "2"}}));
}

TEST(PodInfo, EmptyText) { EXPECT_TRUE(parse_pod_labels("").empty()); }

TEST(PodInfo, LastDuplicateWins) {
  EXPECT_EQ(parse_pod_labels("k=\"1\"\nk=\"2\"\n"), (Labels{{"k", "2"}}));
}

TEST_F(PodInfoFile, WorkloadType) {
  EXPECT_EQ(workload_type_from_file(write("labels", std::string(kLabels))), "run");
}

TEST_F(PodInfoFile, WorkloadTypeWithEscapes) {
  EXPECT_EQ(workload_type_from_file(write("labels", "dominodatalab.com/irsa-workload-type=\"a\\\"b\"\n")), "a\"b");
}

TEST_F(PodInfoFile, MissingLabel) {
  EXPECT_EQ(workload_type_from_file(write("labels", "app=\"jupyter\"\n")), std::nullopt);
}

TEST_F(PodInfoFile, EmptyValue) {
  EXPECT_EQ(workload_type_from_file(write("labels", "dominodatalab.com/irsa-workload-type=\"\"\n")), std::nullopt);
}

TEST_F(PodInfoFile, MalformedValue) {
  EXPECT_EQ(workload_type_from_file(write("labels", "dominodatalab.com/irsa-workload-type=run\n")), std::nullopt);
}

TEST_F(PodInfoFile, EmptyFile) { EXPECT_EQ(workload_type_from_file(write("labels", "")), std::nullopt); }

TEST_F(PodInfoFile, MissingFile) { EXPECT_EQ(workload_type_from_file(dir_ + "/does-not-exist"), std::nullopt); }

TEST_F(PodInfoFile, Directory) {
  ASSERT_EQ(::mkdir((dir_ + "/subdir").c_str(), 0700), 0);
  EXPECT_EQ(workload_type_from_file(dir_ + "/subdir"), std::nullopt);
}

TEST_F(PodInfoFile, UnopenablePath) {
  // ENOTDIR: works even as root, unlike a mode 000 file.
  EXPECT_EQ(workload_type_from_file(write("labels", std::string(kLabels)) + "/child"), std::nullopt);
}

}  // namespace
}  // namespace irsafs

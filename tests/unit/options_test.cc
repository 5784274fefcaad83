#include "app/options.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

namespace irsafs {
namespace {

using ::testing::HasSubstr;

class OptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("irsafs-options-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  EnvLookup env() {
    return [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars.find(name);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    };
  }
  std::string write(const std::string& name, const std::string& text) {
    const auto p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  ResolvedOptions resolve(const CommonArgs& a) { return resolve_options(a, env(), (dir_ / "no-such-dir").string()); }

  std::map<std::string, std::string> vars;
  std::filesystem::path dir_;
};

constexpr const char* kPem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

TEST_F(OptionsTest, DefaultsWhenOnlyTheRunIdIsGiven) {
  CommonArgs a;
  a.run_id = "r1";
  const auto o = resolve(a);
  EXPECT_EQ(o.fetch.endpoint, kDefaultEndpoint);
  EXPECT_EQ(o.fetch.token_url, kDefaultTokenUrl);
  EXPECT_EQ(o.fetch.run_id, "r1");
  EXPECT_FALSE(o.fetch.workload_type);
  EXPECT_EQ(o.fetch.deadline, std::chrono::seconds(60));
  EXPECT_EQ(o.transport.timeout, std::chrono::seconds(10));
  EXPECT_FALSE(o.transport.tls.insecure);
  EXPECT_TRUE(o.transport.tls.ca_pem.empty());
  EXPECT_EQ(o.ca_source, "the system trust store");
}

TEST_F(OptionsTest, EnvironmentFillsWhatFlagsLeaveOut) {
  vars = {{"DOMINO_IRSA_ENDPOINT", "https://e/x"}, {"DOMINO_API_PROXY", "http://p:1/"},
          {"DOMINO_RUN_ID", "env-run"}, {"POD_INFO_PATH", write("labels", "a=\"b\"\ndominodatalab.com/irsa-workload-type=\"cluster-worker\"\n")},
          {"DOMINO_IRSA_SSL_CERT", write("ca.pem", kPem)}};
  const auto o = resolve(CommonArgs{});
  EXPECT_EQ(o.fetch.endpoint, "https://e/x");
  EXPECT_EQ(o.fetch.token_url, "http://p:1/access-token");
  EXPECT_EQ(o.fetch.run_id, "env-run");
  EXPECT_EQ(o.fetch.workload_type, "cluster-worker");
  EXPECT_EQ(o.transport.tls.ca_pem, kPem);
  EXPECT_THAT(o.ca_source, HasSubstr("DOMINO_IRSA_SSL_CERT"));
}

TEST_F(OptionsTest, FlagsBeatTheEnvironment) {
  vars = {{"DOMINO_IRSA_ENDPOINT", "https://e/x"}, {"DOMINO_API_PROXY", "http://p:1"},
          {"DOMINO_RUN_ID", "env-run"}, {"POD_INFO_PATH", write("labels", "dominodatalab.com/irsa-workload-type=\"edge-workload\"\n")},
          {"DOMINO_IRSA_SSL_CERT", write("env.pem", kPem)}};
  CommonArgs a;
  a.endpoint = "https://flag/y";
  a.token_url = "http://flag:2/t";
  a.run_id = "flag-run";
  a.workload_type = "cluster-master";
  a.ca_file = write("flag.pem", std::string(kPem) + kPem);
  a.timeout_seconds = 2.5;
  a.deadline_seconds = 7;
  const auto o = resolve(a);
  EXPECT_EQ(o.fetch.endpoint, "https://flag/y");
  EXPECT_EQ(o.fetch.token_url, "http://flag:2/t");
  EXPECT_EQ(o.fetch.run_id, "flag-run");
  EXPECT_EQ(o.fetch.workload_type, "cluster-master");
  EXPECT_EQ(o.transport.tls.ca_pem, std::string(kPem) + kPem);
  EXPECT_EQ(o.transport.timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(o.fetch.deadline, std::chrono::seconds(7));
}

TEST_F(OptionsTest, MissingRunIdNamesFlagAndVariable) {
  try {
    resolve(CommonArgs{});
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--run-id"));
    EXPECT_THAT(e.what(), HasSubstr("DOMINO_RUN_ID"));
  }
  vars["DOMINO_RUN_ID"] = "";  // empty counts as unset
  EXPECT_THROW(resolve(CommonArgs{}), UsageError);
}

TEST_F(OptionsTest, UnknownWorkloadTypeIsLeftOut) {
  vars = {{"DOMINO_RUN_ID", "r"}, {"POD_INFO_PATH", (dir_ / "missing").string()}};
  EXPECT_FALSE(resolve(CommonArgs{}).fetch.workload_type);
  vars["POD_INFO_PATH"] = write("labels", "app=\"x\"\n");
  EXPECT_FALSE(resolve(CommonArgs{}).fetch.workload_type);
}

TEST_F(OptionsTest, BadNumbersAndUnreadableCaFilesAreUsageErrors) {
  CommonArgs a;
  a.run_id = "r";
  a.timeout_seconds = 0;
  EXPECT_THROW(resolve(a), UsageError);
  a.timeout_seconds = 1;
  a.deadline_seconds = -3;
  EXPECT_THROW(resolve(a), UsageError);
  a.deadline_seconds = 1;
  a.ca_file = (dir_ / "nope.pem").string();
  EXPECT_THROW(resolve(a), UsageError);
  a.ca_file = write("junk.pem", "not a certificate");
  EXPECT_THROW(resolve(a), UsageError);
}

TEST_F(OptionsTest, CertificatesInTheDefaultDirectoryAreUsed) {
  std::filesystem::create_directories(dir_ / "irsa");
  std::ofstream(dir_ / "irsa" / "ca.crt") << kPem;
  std::ofstream(dir_ / "irsa" / "README") << "not a cert";
  CommonArgs a;
  a.run_id = "r";
  const auto o = resolve_options(a, env(), (dir_ / "irsa").string());
  EXPECT_EQ(o.transport.tls.ca_pem, std::string(kPem) + "\n");
  EXPECT_THAT(o.ca_source, HasSubstr("irsa"));
}

// Issue 9, item 6: a run id or workload type that is not UTF-8 made the JSON request body throw
// on the fetch thread (the daemon aborted). Refused at start, naming where it came from.
TEST_F(OptionsTest, NonUtf8RunIdOrWorkloadTypeAbortsTheDaemon) {
  auto expect_usage = [this](const CommonArgs& a, const std::string& names) {
    try {
      const ResolvedOptions o = resolve(a);
      ADD_FAILURE() << "accepted; the request body would be: "
                    << ::testing::PrintToString(o.fetch.run_id);
    } catch (const UsageError& e) {
      EXPECT_THAT(e.what(), HasSubstr(names));
      EXPECT_THAT(e.what(), HasSubstr("not valid UTF-8"));
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
    }
  };
  CommonArgs a;
  a.run_id = "run-\xff";
  expect_usage(a, "--run-id");
  a.run_id.reset();
  vars["DOMINO_RUN_ID"] = "run-\xc3";
  expect_usage(a, "DOMINO_RUN_ID");
  vars["DOMINO_RUN_ID"] = "run-\xc3\xa9";  // é: fine
  EXPECT_EQ(resolve(a).fetch.run_id, "run-\xc3\xa9");
  a.workload_type = "type-\xed\xa0\x80";  // a surrogate
  expect_usage(a, "--workload-type");
  a.workload_type.reset();
  vars["POD_INFO_PATH"] = write("labels", "dominodatalab.com/irsa-workload-type=\"cluster-\\xff\"\n");
  expect_usage(a, "dominodatalab.com/irsa-workload-type");
  vars["POD_INFO_PATH"] = write("labels2", "dominodatalab.com/irsa-workload-type=\"cluster-\\u00e9\"\n");
  EXPECT_EQ(resolve(a).fetch.workload_type, "cluster-\xc3\xa9");
  a.endpoint = "https://irsa/\xff";
  expect_usage(a, "--endpoint");
  a.endpoint.reset();
  a.token_url = "http://token/\xff";
  expect_usage(a, "--token-url");
}

}  // namespace
}  // namespace irsafs

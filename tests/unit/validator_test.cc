#include "common/validator.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace irsafs {
namespace {

using namespace std::string_view_literals;

// The config DESIGN.md shows: what irsa-svc serves.
constexpr std::string_view kExample =
    "[profile src_acme-list-bucket-role]\n"
    "web_identity_token_file = /var/run/secrets/eks.amazonaws.com/serviceaccount/token\n"
    "role_arn = arn:aws:iam::111111111111:role/acme-list-bucket-role\n"
    "\n"
    "[profile acme-list-bucket-role]\n"
    "source_profile = src_acme-list-bucket-role\n"
    "role_arn = arn:aws:iam::222222222222:role/acme-list-bucket-role\n";

struct Case {
  const char* name;
  std::string_view text;
  bool ok;                 // validate_config's verdict
  const char* reason;      // when !ok: a substring of the reason
  bool configparser_ok;    // what botocore (configparser.RawConfigParser + its nested-block
                           // parse) does with the same bytes, checked against Debian's
                           // /usr/bin/python3 3.11; differs from `ok` only where an irsafs
                           // plausibility rule is stricter
};

// clang-format off
const Case kCases[] = {
    // ---- accepted
    {"design_example", kExample, true, "", true},
    {"single_section_no_newline_at_end", "[a]\nk=v", true, "", true},
    {"section_only", "[a]\n", true, "", true},
    {"default_section", "[default]\nregion = us-east-1\n", true, "", true},
    {"DEFAULT_section", "[DEFAULT]\nregion = us-east-1\n", true, "", true},
    {"DEFAULT_repeated", "[DEFAULT]\nk=1\n[DEFAULT]\nj=2\n", true, "", true},
    {"comments", "# leading comment\n; another\n[a]\n# k=v\n;k=v\nk=v\n", true, "", true},
    {"indented_comment", "[a]\n  # indented comment\nk=v\n  ; inside a value\n", true, "", true},
    {"crlf", "[a]\r\nk=v\r\n\r\n[b]\r\nk=v\r\n", true, "", true},
    {"lone_cr", "[a]\rk=v\r\r[b]\rk=v", true, "", true},
    {"continuation", "[a]\nk=first\n  second\n\tthird\n", true, "", true},
    {"continuation_after_blank_line", "[a]\nk=v\n\n  more\n", true, "", true},
    {"indented_header_is_continuation", "[a]\nk=v\n  [b]\n", true, "", true},
    {"colon_delimiter", "[a]\nkey:value\nkey2 : value\n", true, "", true},
    {"empty_value", "[a]\nkey=\nkey2:\n", true, "", true},
    {"first_delimiter_splits", "[a]\nk : v = w\nk2==v\nurl=http://x\n", true, "", true},
    {"name_with_space", "[a]\na b = c\n", true, "", true},
    {"tabs_around_delimiter", "[a]\nk\t=\tv\n", true, "", true},
    {"indented_first_option", "[a]\n  k=v\n  k2=v\n", true, "", true},
    {"indented_header", "  [a]\nk=v\n", true, "", true},
    {"header_with_trailing_text", "[a] trailing\nk=v\n", true, "", true},
    {"header_up_to_last_bracket", "[a]\n[a]x]\n", true, "", true},
    {"bracket_name_option", "[a]\n[]=x\n", true, "", true},
    {"sections_case_sensitive", "[a]\n[A]\n", true, "", true},
    {"same_option_other_section", "[a]\nk=1\n[b]\nk=2\n", true, "", true},
    {"inline_semicolon_is_value", "[a]\nk=v ; not a comment\n", true, "", true},
    {"unicode_value_and_section", "[\xc3\xa9]\nk=\xc3\xa9t\xc3\xa9\n", true, "", true},
    {"bom_inside_value", "[a]\nk=\xef\xbb\xbfv\n", true, "", true},
    {"nbsp_indent_is_whitespace", "\xc2\xa0\n[a]\n\xc2\xa0k=v\nk2\xc2\xa0=v\n", true, "", true},
    {"nested_block", "[a]\ns3 =\n  addressing_style = path\n\n  signature_version = s3v4\n", true, "", true},
    {"nested_block_with_comment", "[a]\ns3 =\n  # c\n  x=1\n", true, "", true},
    {"continuation_of_nonempty_value_needs_no_equals", "[a]\ns3 = v\n  anything\n", true, "", true},
    {"nested_block_line_separator", "[a]\ns3 =\n  x=1\xe2\x80\xa8y=2\n", true, "", true},

    // ---- rejected by configparser / botocore
    {"html_page", "<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n", false, "line 1:", false},
    {"json_error", "{\"error\": \"x\"}", false, "line 1: option line outside any section", false},
    {"json_then_section", "{\"error\": \"x\"}\n[a]\n", false, "line 1:", false},
    {"option_before_section", "# c\nk=v\n[a]\n", false, "line 2: option line outside any section", false},
    {"indented_option_before_section", "  k=v\n[a]\n", false, "line 1: option line outside any section", false},
    {"no_delimiter", "[a]\nk=v\nkey\n", false, "line 3: not a section header, an option or a continuation", false},
    {"empty_brackets", "[]\n", false, "line 1:", false},
    {"empty_brackets_in_section", "[a]\n[]\n", false, "line 2: not a section header", false},
    {"empty_option_name", "[a]\n= value\n", false, "line 2: option with an empty name", false},
    {"empty_option_name_colon", "[a]\n: value\n", false, "line 2: option with an empty name", false},
    {"continuation_after_header", "[a]\n  cont\n", false, "line 2: not a section header", false},
    {"continuation_after_second_header", "[a]\nk=v\n[b]\n  x\n", false, "line 4:", false},
    {"duplicate_section", "[a]\nk=v\n[b]\n[a]\n", false, "line 4: duplicate section", false},
    {"duplicate_option", "[a]\nk=1\nk=2\n", false, "line 3: duplicate option in section", false},
    {"duplicate_option_case_insensitive", "[a]\nRole_Arn=1\nrole_arn=2\n", false, "line 3: duplicate option", false},
    {"duplicate_option_across_DEFAULTs", "[DEFAULT]\nk=1\n[DEFAULT]\nK=2\n", false, "line 4: duplicate option", false},
    {"bom", "\xef\xbb\xbf[profile x]\nk=v\n", false, "byte order mark", false},
    {"bom_before_comment", "\xef\xbb\xbf# c\n[a]\n", false, "byte order mark", false},
    {"bom_alone_on_a_line", "[a]\n\xef\xbb\xbf\n", false, "line 2:", false},
    {"invalid_utf8", "[a]\nk=\xff\n", false, "invalid UTF-8 at byte 7", false},
    {"truncated_utf8_at_end", "[a]\nk=\xc3", false, "invalid UTF-8 at byte 7", false},
    {"overlong_utf8", "[a]\nk=\xc0\xaf\n", false, "invalid UTF-8", false},
    {"surrogate_utf8", "[a]\nk=\xed\xa0\x80\n", false, "invalid UTF-8", false},
    {"nested_block_without_equals", "[a]\ns3 =\n  x=1\n  bad\n", false, "line 4: line of an indented (nested) block", false},
    {"nested_block_after_blank", "[a]\ns3 =\n\n  bad\n", false, "line 4:", false},
    {"nested_block_split_by_line_separator", "[a]\ns3 =\n  x=1\xe2\x80\xa8y\n", false, "line 3:", false},

    // (configparser fails on the first line, irsafs already on the first byte)
    {"binary", "\x7f" "ELF\x02\x01\x01\0\0\0"sv, false, "byte 1: control character", false},

    // ---- accepted by configparser, rejected by irsafs' plausibility rules
    {"empty", "", false, "empty body", true},
    {"whitespace_only", " \n\t\r\n", false, "empty body", true},
    {"comments_only", "# just\n; comments\n", false, "no [section] header", true},
    {"nul_byte", "[a]\nk=v\0\n"sv, false, "byte 8: NUL byte", true},
    {"control_byte", "[a]\nk=v\x01\n", false, "byte 8: control character", true},
    {"escape_byte", "[a]\nk=\x1b[31mred\n", false, "byte 7: control character", true},
    {"vertical_tab", "[a]\nk=v\x0b\n", false, "control character", true},
    {"form_feed", "[a]\n\x0c\n", false, "control character", true},
    {"del_byte", "[a]\nk=v\x7f\n", false, "byte 8: control character", true},
    {"c1_control", "[a]\nk=\xc2\x85\n", false, "byte 7: control character (C1)", true},
    {"non_ascii_option_name", "[a]\n\xc3\xa9=v\n", false, "line 2: non-ASCII option name", true},
    // configparser lower-cases the Kelvin sign to 'k': a duplicate there, a non-ASCII name here.
    {"kelvin_sign_option_name", "[a]\n\xe2\x84\xaa=1\nk=2\n", false, "line 2: non-ASCII option name", false},
    // botocore parses DEFAULT's values only through the sections that inherit them.
    {"nested_block_in_DEFAULT_without_sections", "[DEFAULT]\ns3 =\n  bad\n", false, "line 3:", true},
};
// clang-format on

class ValidatorTable : public ::testing::TestWithParam<Case> {};

TEST_P(ValidatorTable, Verdict) {
  const Case& c = GetParam();
  const Validation v = validate_config(c.text);
  EXPECT_EQ(v.ok, c.ok) << "reason: " << v.reason;
  EXPECT_EQ(static_cast<bool>(v), v.ok);
  if (c.ok) {
    EXPECT_EQ(v.reason, "");
  } else {
    EXPECT_NE(v.reason.find(c.reason), std::string::npos) << "reason: " << v.reason;
  }
  // The table documents configparser's own verdict: they only differ where irsafs is stricter.
  if (c.ok) {
    EXPECT_TRUE(c.configparser_ok);
  }
}

TEST_P(ValidatorTable, EveryPrefixOfAValidConfigIsAValidPrefix) {
  const Case& c = GetParam();
  if (!c.ok) return;  // a broken config says nothing about its prefixes
  for (std::size_t k = 0; k <= c.text.size(); ++k) {
    const Validation v = validate_config_prefix(c.text.substr(0, k));
    EXPECT_TRUE(v.ok) << "cut at byte " << k << ": " << v.reason;
  }
}

TEST_P(ValidatorTable, AnInvalidPrefixMeansAnInvalidConfig) {
  const Case& c = GetParam();
  if (!validate_config_prefix(c.text)) {
    EXPECT_FALSE(validate_config(c.text).ok);
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Validator, ValidatorTable, ::testing::ValuesIn(kCases), case_name);

TEST(Validator, SizeLimit) {
  // A valid config padded with comment lines to exactly the limit, then one byte more.
  std::string text = "[a]\nk=v\n";
  while (text.size() < kMaxConfigBytes) {
    const std::size_t room = kMaxConfigBytes - text.size();
    text += room >= 80 ? "#" + std::string(78, 'x') + "\n" : std::string(room, '\n');
  }
  ASSERT_EQ(text.size(), kMaxConfigBytes);
  EXPECT_TRUE(validate_config(text).ok);
  EXPECT_TRUE(validate_config_prefix(text).ok);
  text += "\n";
  EXPECT_EQ(validate_config(text).reason, "larger than 1 MiB");
  EXPECT_EQ(validate_config_prefix(text).reason, "larger than 1 MiB");
}

TEST(Validator, CrLfAndLfGiveTheSameLineNumbers) {
  EXPECT_EQ(validate_config("[a]\r\nk=1\r\n\r\nk=2\r\n").reason, "line 4: duplicate option in section");
  EXPECT_EQ(validate_config("[a]\nk=1\n\nk=2\n").reason, "line 4: duplicate option in section");
  EXPECT_EQ(validate_config("[a]\rk=1\r\rk=2\r").reason, "line 4: duplicate option in section");
}

TEST(ValidatorPrefix, EmptyAndPartialPrefixes) {
  for (const std::string_view ok : {""sv, " "sv, "\n"sv, "#"sv, "# c\n"sv, "["sv, "[a"sv, "[a]"sv, "[a]\nk"sv,
                                    "[a]\nk="sv, "[a]\r"sv, "[a]\nk=\xc3"sv, "[a]\nk=\xe2\x80"sv, "[a]\n["sv,
                                    "[a]\n[a"sv, "[a]\n[a]"sv, "[a]\ns3 =\n  x"sv}) {
    EXPECT_TRUE(validate_config_prefix(ok).ok) << testing::PrintToString(ok);
  }
}

TEST(ValidatorPrefix, RejectedAtTheFirstByte) {
  EXPECT_FALSE(validate_config_prefix("<").ok);
  EXPECT_FALSE(validate_config_prefix("{").ok);
  EXPECT_FALSE(validate_config_prefix("\0"sv).ok);
  EXPECT_FALSE(validate_config_prefix("\x7f").ok);
  EXPECT_FALSE(validate_config_prefix("\xff").ok);
  EXPECT_FALSE(validate_config_prefix("  <").ok);
  EXPECT_FALSE(validate_config_prefix("\xef\xbb\xbf").ok);
  // ...and every longer prefix of such bodies too.
  for (const std::string_view body : {"<!DOCTYPE html>\n<html><head><title>502</title></head></html>\n"sv,
                                      "{\"error\": \"token expired\"}\n"sv, "\0\0\0\x01binary"sv}) {
    for (std::size_t k = 1; k <= body.size(); ++k) {
      EXPECT_FALSE(validate_config_prefix(body.substr(0, k)).ok) << "cut at byte " << k;
    }
  }
}

TEST(ValidatorPrefix, CompleteLinesAreJudgedFully) {
  EXPECT_EQ(validate_config_prefix("[a]\nk=1\nK=").reason, "line 3: duplicate option in section");
  EXPECT_EQ(validate_config_prefix("[a]\n[a]\n").reason, "line 2: duplicate section");
  EXPECT_EQ(validate_config_prefix("[a]\nkey\n").reason,
            "line 2: not a section header, an option or a continuation");
  // A lone \r already ends the line: a \n after it would only make it \r\n.
  EXPECT_FALSE(validate_config_prefix("[a]\nkey\r").ok);
  EXPECT_FALSE(validate_config_prefix("[a]\n= v").ok);          // the name is already empty
  EXPECT_FALSE(validate_config_prefix("[a]\n\xc3\xa9").ok);     // the name is already non-ASCII
  EXPECT_FALSE(validate_config_prefix("[a]\ns3 =\n  x\xe2\x80\xa8" "y=1").ok);  // piece "x" is done
  EXPECT_FALSE(validate_config_prefix("[a]\nk=v\0"sv).ok);
  // Whole-text rules wait for the end.
  EXPECT_TRUE(validate_config_prefix("# only a comment so far\n").ok);
  EXPECT_FALSE(validate_config("# only a comment so far\n").ok);
}

TEST(Validator, ReasonsNeverQuoteTheText) {
  const std::string secret = "SECRETVALUE123";
  const std::vector<std::string> broken = {
      secret,
      secret + "\n[a]\n",
      "[a]\n" + secret + "\n",
      "[a]\n" + secret + "=1\n" + secret + "=2\n",
      "[" + secret + "]\n[" + secret + "]\n",
      "[a]\nk=" + secret + "\x01\n",
      "[a]\nk=" + secret + "\xff\n",
      "[a]\ns3 =\n  " + secret + "\n",
      "[a]\n=" + secret + "\n",
      "{\"token\": \"" + secret + "\"}",
      "<html>" + secret + "</html>",
      "# " + secret + "\n",
  };
  for (const std::string& text : broken) {
    for (const Validation& v : {validate_config(text), validate_config_prefix(text)}) {
      if (v.ok) continue;
      EXPECT_FALSE(v.reason.empty());
      EXPECT_EQ(v.reason.find("SECRET"), std::string::npos) << v.reason;
      EXPECT_EQ(v.reason.find("VALUE"), std::string::npos) << v.reason;
    }
    EXPECT_FALSE(validate_config(text).ok) << text;
  }
}

// Issue 9, item 12: a writer's text is judged as it grows (ConfigChecker). Fed byte by byte,
// and cut in two at every point, it must reach the verdicts of one pass over the whole text.
TEST_P(ValidatorTable, ByteByByteAppendsGiveTheSameVerdicts) {
  const Case& c = GetParam();
  const std::string text(c.text);
  ConfigChecker checker;
  for (std::size_t k = 0; k <= text.size(); ++k) {
    const std::string_view prefix = std::string_view(text).substr(0, k);
    const Validation piecewise = checker.append(prefix);
    EXPECT_EQ(piecewise.ok, validate_config_prefix(prefix).ok) << "after " << k << " bytes";
    if (!piecewise.ok) break;
    const Validation whole = validate_config(prefix);
    const Validation done = checker.complete(prefix);
    EXPECT_EQ(done.ok, whole.ok) << "complete after " << k << " bytes";
    EXPECT_EQ(done.reason, whole.reason) << "complete after " << k << " bytes";
  }
  for (std::size_t k = 0; k <= text.size(); ++k) {
    ConfigChecker two;
    if (!two.append(std::string_view(text).substr(0, k))) continue;
    const Validation v = two.append(text);
    EXPECT_EQ(v.ok, validate_config_prefix(text).ok) << "cut at " << k;
    if (v) {
      EXPECT_EQ(two.complete(text).reason, validate_config(text).reason) << "cut at " << k;
      EXPECT_EQ(two.complete(text).ok, validate_config(text).ok) << "cut at " << k;
    }
  }
}

TEST(ConfigChecker, SplitsInsideCrLfCharactersAndOptionNames) {
  // \r | \n across two appends is one line ending, as in one pass.
  ConfigChecker a;
  EXPECT_TRUE(a.append("[a]\r"));
  EXPECT_TRUE(a.append("[a]\r\nk=1\r"));
  EXPECT_TRUE(a.append("[a]\r\nk=1\r\nj=2\r\n"));
  EXPECT_TRUE(a.complete("[a]\r\nk=1\r\nj=2\r\n"));
  // A name on the last, incomplete line is not taken in before its line ends.
  ConfigChecker b;
  EXPECT_TRUE(b.append("[a]\nregion = us"));
  EXPECT_TRUE(b.append("[a]\nregion = us-east-1\n"));
  EXPECT_EQ(b.append("[a]\nregion = us-east-1\nREGION = x\n").reason, "line 3: duplicate option in section");
  // A character cut by an append is judged when it is whole.
  ConfigChecker c;
  EXPECT_TRUE(c.append("[a]\nk = \xc3"));
  EXPECT_EQ(c.complete("[a]\nk = \xc3").reason, "invalid UTF-8 at byte 9 (truncated sequence)");
  EXPECT_TRUE(c.append("[a]\nk = \xc3\xa9\n"));
  EXPECT_TRUE(c.complete("[a]\nk = \xc3\xa9\n"));
  // A failure sticks; reset() starts over.
  EXPECT_FALSE(c.append("[a]\nk = \xc3\xa9\n\x01"));
  EXPECT_FALSE(c.append("[a]\nk = \xc3\xa9\n\x01more"));
  c.reset();
  EXPECT_EQ(c.seen(), 0u);
  EXPECT_TRUE(c.append("[b]\n"));
}

}  // namespace
}  // namespace irsafs

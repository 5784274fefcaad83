// The Kubernetes downward-API labels file (POD_INFO_PATH): one label per line, key="value",
// the value quoted the way Go's %q quotes strings.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace irsafs {

inline constexpr std::string_view kWorkloadTypeLabel = "dominodatalab.com/irsa-workload-type";

// Parses the labels; malformed lines are skipped.
std::map<std::string, std::string> parse_pod_labels(std::string_view text);

// The workload type from a labels file, or nullopt when the file is unreadable, the label is
// absent or empty.
std::optional<std::string> workload_type_from_file(const std::string& path);

}  // namespace irsafs

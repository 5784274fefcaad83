// GET /metrics: the .status JSON as Prometheus text exposition format 0.0.4.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace irsafs {

inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Renders `status` (the object of ConfigService::status() plus the adapter's fields). Pure: the
// same status gives the same text. A field that is absent or not a number leaves its metric
// out, so the status may gain fields before the metrics use them and lose none silently wrong.
//
// Counters (each the .status field of that name):
//   irsafs_fetches_total{outcome="success"|"failure"}  fetch_successes (or, until the status has
//                                   it: fetches - failures - 1 if one is running) / failures
//   irsafs_upstream_requests_total   upstream_requests
//   irsafs_token_requests_total      token_requests
//   irsafs_peer_requests_total       peer_requests (a worker's GETs to its --peer)
//   irsafs_peer_served_requests_total  peers.requests (a head's --serve-peers)
//   irsafs_peer_answers_total{status="200"|"304"|"401"|"403"|"503"|"other"}  peers.answers
//   irsafs_fuse_requests_total       fuse_requests
//   irsafs_writes_total{outcome="committed"|"rejected"}  writes.committed / writes.rejected
//   irsafs_refreshes_total           refreshes (a number; or an object of counts by trigger,
//                                   rendered with a `trigger` label)
//   irsafs_role_verification_attempts_total  verification.attempts_total (STS calls)
// Gauges:
//   irsafs_state{state="empty"|"fetching"|"ready"|"error"}  1 for the current state, else 0
//   irsafs_refreshing                refreshing (0/1)
//   irsafs_waiting_readers           waiting_readers
//   irsafs_content_bytes             bytes
//   irsafs_content_version           version
//   irsafs_write_sessions_pending    writes.pending
//   irsafs_last_fetch_duration_seconds  last_fetch_ms / 1000
//   irsafs_last_success_timestamp_seconds  last_success_at (0: never)
//   irsafs_last_error_timestamp_seconds    last_error_at (0: never)
//   irsafs_start_time_seconds        started_at
//   irsafs_role_verification{role_arn=...,state="pending"|"verified"|"unverified"|"permanent"}
//                                   1 for each role's state in verification.roles, else 0
//   irsafs_role_verification_duration_seconds  verification.total_seconds
// Timestamps are read from ISO-8601 UTC strings as .status writes them (2024-05-01T12:00:00Z,
// optional fraction) or from numbers of Unix seconds.
std::string render_metrics(const nlohmann::ordered_json& status);

// Unix seconds of an ISO-8601 UTC time "YYYY-MM-DDTHH:MM:SS[.fff]Z" (also "+00:00"), or nullopt.
std::optional<double> parse_iso8601_utc(std::string_view text);

}  // namespace irsafs

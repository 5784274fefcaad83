#pragma once

namespace irsafs {

// Exit statuses of the program; tests assert them.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,  // the fetch or the mount failed; a message says why
  kExitUsage = 2,    // bad command line or environment
};

}  // namespace irsafs

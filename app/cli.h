#pragma once

namespace irsafs {

// Parses the command line and runs `irsafs fetch` or `irsafs mount`. Returns the exit status.
int run_cli(int argc, char** argv);

}  // namespace irsafs

#include "app/cli.h"

int main(int argc, char** argv) { return irsafs::run_cli(argc, argv); }

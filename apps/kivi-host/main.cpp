#include <iostream>

#include "host_app.h"

int main(int argc, char** argv) {
  return kivi::host::run_host(argc, argv, std::cout, std::cerr);
}

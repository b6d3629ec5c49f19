// A shared library that is not a kivi plugin: it lacks the entry symbol.
extern "C" __attribute__((visibility("default"))) int some_other_function() {
  return 42;
}

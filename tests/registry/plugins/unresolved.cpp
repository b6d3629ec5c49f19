// A library with a function that calls a symbol defined nowhere. Loaded lazily it would pass
// and fail only at that call; the registry loads RTLD_NOW, so it is refused at load, with the
// loader's message naming the symbol.
extern "C" int kivi_test_symbol_defined_nowhere();
extern "C" __attribute__((visibility("default"))) int kivi_test_call_nowhere() {
  return kivi_test_symbol_defined_nowhere();
}
extern "C" __attribute__((visibility("default"))) const void* kivi_plugin_entry() {
  return nullptr;
}

// The C boundary between kivi and its plugin libraries. Plain C so that the handshake itself
// never depends on the C++ toolchain: the loader reads `abi_version` (always the first member)
// before touching anything else, and refuses a library whose version or build fingerprint
// differs from its own. Beyond this handshake, objects are ordinary C++ interfaces passing
// at::Tensor (see kivi/plugin/plugin.h), which is safe only because the fingerprint matched.
//
// Ownership: a factory's `create` returns an object that only the same factory's `destroy`
// may release. Strings in these structs are static and owned by the library, which stays
// loaded for the life of the process. No exception crosses this boundary: `create` reports
// failure as text in the caller's buffer.
#ifndef KIVI_PLUGIN_PLUGIN_ABI_H
#define KIVI_PLUGIN_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bump whenever these structs or the C++ interfaces change incompatibly. */
#define KIVI_PLUGIN_ABI_VERSION 1
/* The one symbol each plugin library exports. */
#define KIVI_PLUGIN_ENTRY_SYMBOL "kivi_plugin_entry"

/* Kinds of object a factory makes, and the C++ interface its `create` returns:
 *   "kv_cache"      kivi::KVCacheFactory  (kivi/cache/kv_cache.h)
 *   "attention"     kivi::Attention       (kivi/attention/attention.h)
 *   "model_family"  kivi::ModelFamily     (kivi/model/model_family.h) */

typedef struct kivi_factory_v1 {
  uint32_t struct_size; /* sizeof(kivi_factory_v1) as the plugin saw it */
  const char* kind;     /* one of the kinds above */
  const char* name;     /* unique within its kind, e.g. "fp16", "kivi", "sdpa", "llama" */
  const char* summary;  /* one line for `kivi-host plugins` */
  /* Makes the object from its configuration, given as TOML text (a table's body; may be empty).
   * Returns 0 and sets *out_object on success; otherwise returns non-zero and writes a
   * NUL-terminated message of at most error_capacity bytes into `error`. */
  int (*create)(const char* config_toml, void** out_object, char* error, size_t error_capacity);
  /* Releases an object made by `create` of this same factory. */
  void (*destroy)(void* object);
} kivi_factory_v1;

typedef struct kivi_plugin_v1 {
  uint32_t abi_version;    /* KIVI_PLUGIN_ABI_VERSION the library was built with; read first */
  uint32_t struct_size;    /* sizeof(kivi_plugin_v1) as the plugin saw it */
  const char* library;     /* the library's own name, e.g. "kivi-fp-cache" */
  const char* version;     /* the plugin's version, e.g. "0.1.0" */
  const char* fingerprint; /* kivi::build_fingerprint() as compiled into the plugin */
  uint32_t factory_count;
  const kivi_factory_v1* factories;
} kivi_plugin_v1;

typedef const kivi_plugin_v1* (*kivi_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* KIVI_PLUGIN_PLUGIN_ABI_H */

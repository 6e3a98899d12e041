// libFuzzer: the safetensors reader's header validation. Any input either loads (and then every
// tensor's bytes lie inside the file) or fails with esft::Error; never a crash, hang or overread.
#include <cstring>

#include "esft/error.h"
#include "esft/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = esft::fuzz::input_file(data, size, ".safetensors");
  try {
    esft::SafetensorsFile f(path);
    uint64_t sum = 0;
    for (auto& t : f.tensors()) {
      const uint8_t* p = f.data(t);
      for (size_t i = 0; i < t.nbytes; i += 64) sum += p[i];  // touches every page of every tensor
      if (t.nbytes) sum += p[t.nbytes - 1];
      if (f.find(t.name) != &t) __builtin_trap();
    }
    for (auto& [k, v] : f.metadata()) sum += k.size() + v.size();
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const esft::Error&) {
  }
  return 0;
}

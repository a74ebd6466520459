// Fuzzes ImportOnnxModel (server/engine/onnx_import.h) with serialized ONNX
// ModelProto bytes. The importer promises to check every index and size in
// the file; every spec it accepts must be valid and must run on the
// reference executor (engine_fuzz_util.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/engine/onnx_import.h"
#include "tests/fuzz/engine_fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  rnnserve::StatusOr<rnnserve::engine::ModelSpec> spec =
      rnnserve::engine::ImportOnnxModel(bytes, "fuzz.onnx");
  if (!spec.ok()) {
    if (spec.status().message().empty()) {
      rnnserve::fuzz::Fail("onnx_import_fuzz", "error without a message");
    }
    return 0;
  }
  rnnserve::fuzz::CheckAcceptedSpec("onnx_import_fuzz", *spec);
  return 0;
}

// Fuzzes ParseArtifact (server/engine/artifact.h), the .rnnq loader.
//
// Every artifact it accepts must yield a valid spec that runs on the
// reference executor (engine_fuzz_util.h), and must write back out with
// SerializeArtifact into bytes that parse again to the same model.
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "server/engine/artifact.h"
#include "server/engine/quantization.h"
#include "tests/fuzz/engine_fuzz_util.h"

namespace {
constexpr char kTarget[] = "artifact_fuzz";
}  // namespace

// protobuf logs each proto3 string with invalid UTF-8 that it refuses to
// parse; the refusal is the behaviour under test, the log line only noise.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rnnserve::fuzz::Fail;
  namespace engine = rnnserve::engine;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  (void)engine::LooksLikeArtifact(bytes);
  rnnserve::StatusOr<engine::LoadedArtifact> loaded =
      engine::ParseArtifact(bytes, "fuzz.rnnq");
  if (!loaded.ok()) {
    if (loaded.status().message().empty()) {
      Fail(kTarget, "error without a message");
    }
    return 0;
  }
  if (!engine::ValidateQuantization(loaded->spec, loaded->quantization).ok()) {
    Fail(kTarget, "an accepted artifact fails ValidateQuantization");
  }
  rnnserve::fuzz::CheckAcceptedSpec(kTarget, loaded->spec);

  rnnserve::StatusOr<std::string> written =
      engine::SerializeArtifact(loaded->spec, loaded->quantization,
                                loaded->source_sha256, loaded->source_name);
  if (!written.ok()) {
    Fail(kTarget, "SerializeArtifact rejects a loaded artifact");
  }
  rnnserve::StatusOr<engine::LoadedArtifact> again =
      engine::ParseArtifact(*written, "round trip");
  if (!again.ok()) Fail(kTarget, "a re-serialized artifact does not parse");
  if (again->spec.ParameterCount() != loaded->spec.ParameterCount() ||
      again->spec.layers.size() != loaded->spec.layers.size() ||
      again->source_sha256 != loaded->source_sha256) {
    Fail(kTarget, "round trip changed the model");
  }
  return 0;
}

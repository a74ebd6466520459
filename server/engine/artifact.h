// The quantized-model artifact (proto/rnnserve_model.proto): writing it after
// calibration and loading it back without calibration data.
//
// A loaded artifact yields a ModelSpec and its QuantizationSpec. The int8
// layers' f32 weights in that ModelSpec are the dequantized s8 values (the
// artifact holds no f32 copy of them); f32 execution of the original model
// (reference, drift checks) needs the source ONNX, whose SHA-256 the artifact
// records so that a mismatched pair is detected.
#ifndef RNNSERVE_ENGINE_ARTIFACT_H_
#define RNNSERVE_ENGINE_ARTIFACT_H_

#include <string>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"

namespace rnnserve::engine {

// File name extension the repository and the tools use for artifacts.
inline constexpr char kArtifactExtension[] = ".rnnq";

struct LoadedArtifact {
  ModelSpec spec;
  QuantizationSpec quantization;
  std::string source_sha256;
  std::string source_name;
};

// Serializes `spec` + `quantization` (every layer either int8 or f32).
StatusOr<std::string> SerializeArtifact(const ModelSpec& spec,
                                        const QuantizationSpec& quantization,
                                        const std::string& source_sha256,
                                        const std::string& source_name);
Status WriteArtifact(const std::string& path, const std::string& bytes);

// Parses and validates an artifact; a truncated, corrupt or foreign file is
// INVALID_ARGUMENT naming `what`.
StatusOr<LoadedArtifact> ParseArtifact(const std::string& bytes,
                                       const std::string& what);
StatusOr<LoadedArtifact> LoadArtifactFile(const std::string& path);

// True when the file content starts like an artifact rather than an ONNX
// model (used by tools that accept either).
bool LooksLikeArtifact(const std::string& bytes);

// Hex SHA-256 of a byte string (for the source-model check).
std::string Sha256Hex(const std::string& bytes);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_ARTIFACT_H_

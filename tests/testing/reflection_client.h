// Test helper: lists a server's services through gRPC server reflection
// (grpc.reflection.v1alpha), as Debian's grpc++ 1.51 ships it. Its .proto
// files and client headers are not installed, so the call goes out as raw
// bytes (ByteBuffer) and the answer is decoded with UnknownFieldSet.
#ifndef RNNSERVE_TESTS_TESTING_REFLECTION_CLIENT_H_
#define RNNSERVE_TESTS_TESTING_REFLECTION_CLIENT_H_

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_callback.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include <memory>
#include <string>
#include <vector>

namespace rnnserve::testing {

inline std::string ByteBufferToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

inline grpc::ByteBuffer StringToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

// The service names the server lists; sets *ok to false when the call or
// the decoding fails.
inline std::vector<std::string> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel, bool* ok) {
  *ok = false;
  std::vector<std::string> services;
  grpc::ClientContext ctx;
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING, channel);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream(grpc::internal::ClientReaderWriterFactory<
             grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(), method,
                                                         &ctx));
  // ServerReflectionRequest{list_services = ""}: field 7, length-delimited.
  if (!stream->Write(StringToByteBuffer(std::string("\x3a\x00", 2)))) {
    return services;
  }
  stream->WritesDone();
  grpc::ByteBuffer reply;
  if (!stream->Read(&reply) || !stream->Finish().ok()) return services;
  // ServerReflectionResponse.list_services_response (6)
  //   -> ListServiceResponse.service (1, repeated) -> ServiceResponse.name (1).
  google::protobuf::UnknownFieldSet top;
  if (!top.ParseFromString(ByteBufferToString(reply))) return services;
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    if (!list.ParseFromString(top.field(i).length_delimited())) return services;
    for (int j = 0; j < list.field_count(); ++j) {
      google::protobuf::UnknownFieldSet entry;
      if (!entry.ParseFromString(list.field(j).length_delimited())) {
        return services;
      }
      for (int k = 0; k < entry.field_count(); ++k) {
        if (entry.field(k).number() == 1) {
          services.push_back(entry.field(k).length_delimited());
        }
      }
    }
  }
  *ok = true;
  return services;
}

}  // namespace rnnserve::testing

#endif  // RNNSERVE_TESTS_TESTING_REFLECTION_CLIENT_H_

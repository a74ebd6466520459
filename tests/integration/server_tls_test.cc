// TLS and mutual TLS on the gRPC port, with certificates the test makes
// with the openssl command line (Debian's openssl package).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/security/credentials.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/integration/test_server.h"

namespace rnnserve::testing {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A self-signed certificate for `cn` valid for 127.0.0.1 and localhost;
// writes <dir>/<name>.pem and <dir>/<name>.key.
bool MakeCertificate(const std::string& dir, const std::string& name, const std::string& cn) {
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" + cn +
                          " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + dir +
                          "/" + name + ".key -out " + dir + "/" + name + ".pem >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

class ServerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_.AddCharlm("charlm", "{kind: dynamic}");
    certs_ = repo_.root() + "/.certs";  // hidden: the repository skips it
    std::filesystem::create_directories(certs_);
    ASSERT_TRUE(MakeCertificate(certs_, "server", "localhost")) << "openssl failed";
    ASSERT_TRUE(MakeCertificate(certs_, "client", "rnnserve-test-client"));
    tokens_ = HeldoutTokens(&rows_, &cols_);
  }

  // One inference over `credentials`; returns the status.
  grpc::Status InferOver(const std::string& address,
                         const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(address, credentials));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    inference::ModelInferResponse response;
    const auto t = TokenSlice(tokens_, cols_, 0, 1, 8);
    grpc::Status status = stub->ModelInfer(&ctx, TokenRequest("charlm", t, 1, 8), &response);
    if (status.ok()) {
      EXPECT_EQ(OutputFloats(response).size(), 8u * 97);
    }
    return status;
  }

  grpc::SslCredentialsOptions TrustServer() {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadText(certs_ + "/server.pem");
    return ssl;
  }

  TempRepository repo_;
  std::string certs_;
  std::vector<int64_t> tokens_;
  int64_t rows_ = 0, cols_ = 0;
};

TEST_F(ServerTlsTest, TlsServesTrustingClientsAndRefusesPlaintext) {
  auto server = StartServer(repo_.root(), [&](config::ServerConfig* c) {
    c->tls.cert_file = certs_ + "/server.pem";
    c->tls.key_file = certs_ + "/server.key";
  });
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(InferOver(server->address(), grpc::SslCredentials(TrustServer())).ok());
  EXPECT_FALSE(InferOver(server->address(), grpc::InsecureChannelCredentials()).ok());
  // A client that trusts another CA refuses the server.
  grpc::SslCredentialsOptions wrong;
  wrong.pem_root_certs = ReadText(certs_ + "/client.pem");
  EXPECT_FALSE(InferOver(server->address(), grpc::SslCredentials(wrong)).ok());
}

TEST_F(ServerTlsTest, MutualTlsNeedsAClientCertificateFromTheConfiguredCa) {
  auto server = StartServer(repo_.root(), [&](config::ServerConfig* c) {
    c->tls.cert_file = certs_ + "/server.pem";
    c->tls.key_file = certs_ + "/server.key";
    c->tls.client_ca_file = certs_ + "/client.pem";
  });
  ASSERT_NE(server, nullptr);
  grpc::SslCredentialsOptions with_cert = TrustServer();
  with_cert.pem_cert_chain = ReadText(certs_ + "/client.pem");
  with_cert.pem_private_key = ReadText(certs_ + "/client.key");
  EXPECT_TRUE(InferOver(server->address(), grpc::SslCredentials(with_cert)).ok());
  EXPECT_FALSE(InferOver(server->address(), grpc::SslCredentials(TrustServer())).ok());
}

TEST_F(ServerTlsTest, UnreadableCertificateIsAnErrorNamingTheField) {
  rpc::Server::Options options;
  options.config.model_repository = repo_.root();
  options.config.grpc_address = "127.0.0.1:0";
  options.config.metrics_address = "127.0.0.1:0";
  options.config.tls.cert_file = certs_ + "/missing.pem";
  options.config.tls.key_file = certs_ + "/server.key";
  auto server = rpc::Server::Create(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), ::testing::HasSubstr("server.tls.cert_file"));
}

}  // namespace
}  // namespace rnnserve::testing

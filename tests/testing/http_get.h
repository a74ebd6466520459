// Test helper: a minimal HTTP/1.0 GET over a loopback TCP socket (for
// scraping /metrics without a client library), and a parser of the
// Prometheus text format into "name{labels}" -> value.
#ifndef RNNSERVE_TESTS_TESTING_HTTP_GET_H_
#define RNNSERVE_TESTS_TESTING_HTTP_GET_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

namespace rnnserve::testing {

// The body of GET http://127.0.0.1:<port><path>; "" on any failure,
// including no answer within 30 s.
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  const timeval timeout{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  // With nobody listening on an ephemeral port, Linux may connect the
  // socket to itself (its source port picked equal to `port`): that is no
  // server, and reading would wait for our own request to be answered.
  sockaddr_in self{};
  socklen_t self_len = sizeof(self);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_len) != 0 ||
      self.sin_port == addr.sin_port) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return "";
  // A connection closed mid-answer (a server stopping) is a failure too.
  std::string headers = response.substr(0, body);
  for (char& c : headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const size_t length = headers.find("\r\ncontent-length:");
  if (length != std::string::npos &&
      std::strtoull(headers.c_str() + length + 17, nullptr, 10) !=
          response.size() - body - 4) {
    return "";
  }
  return response.substr(body + 4);
}

// Prometheus text exposition -> {"name{a=\"x\",b=\"y\"}" -> value}, the
// series key exactly as exposed (labels in the exposer's order).
inline std::map<std::string, double> ParseExposition(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    out[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return out;
}

}  // namespace rnnserve::testing

#endif  // RNNSERVE_TESTS_TESTING_HTTP_GET_H_

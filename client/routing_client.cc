#include "client/routing_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "client/sequence_chunks.h"

namespace rnnserve::client {
namespace {

// Adapts InferenceClient (one gRPC channel) to EndpointClient.
class GrpcEndpointClient : public EndpointClient {
 public:
  explicit GrpcEndpointClient(std::unique_ptr<InferenceClient> client)
      : client_(std::move(client)) {}
  StatusOr<InferResult> Infer(const InferRequest& request) override {
    return client_->Infer(request);
  }

 private:
  std::unique_ptr<InferenceClient> client_;
};

std::vector<std::string> SortedUnique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::string JoinEndpoints(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& e : v) out += (out.empty() ? "" : ", ") + e;
  return out;
}

constexpr int kMaxVirtualNodes = 4096;

// The replica is leaving or gone. UNAVAILABLE: it cannot be reached, or it
// answered that it is shutting down. CANCELLED: gRPC cancels calls that
// reach a server after its graceful shutdown began (seen with rnnserve on
// SIGTERM); this client never cancels its own calls, so a CANCELLED can only
// come from the replica's side.
bool ReplicaGone(const Status& status) {
  return status.code() == StatusCode::kUnavailable ||
         status.code() == StatusCode::kCancelled;
}

}  // namespace

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

uint64_t SequenceKey(uint64_t sequence_id) {
  char bytes[8];
  for (int i = 0; i < 8; ++i)
    bytes[i] = static_cast<char>(sequence_id >> (8 * i));
  return Mix64(Fnv1a64(std::string_view(bytes, 8)));
}

HashRing::HashRing(const std::vector<std::string>& endpoints, int virtual_nodes)
    : endpoints_(SortedUnique(endpoints)) {
  const int vnodes = std::max(1, virtual_nodes);
  points_.reserve(endpoints_.size() * static_cast<size_t>(vnodes));
  for (size_t e = 0; e < endpoints_.size(); ++e) {
    for (int i = 0; i < vnodes; ++i) {
      points_.emplace_back(
          Mix64(Fnv1a64(endpoints_[e] + "#" + std::to_string(i))), e);
    }
  }
  // endpoints_ is sorted, so equal points order by endpoint string.
  std::sort(points_.begin(), points_.end());
}

const std::string& HashRing::Owner(uint64_t sequence_id) const {
  static const std::string kNone;
  if (points_.empty()) return kNone;
  const uint64_t key = SequenceKey(sequence_id);
  auto it = std::lower_bound(points_.begin(), points_.end(),
                             std::make_pair(key, size_t{0}));
  if (it == points_.end()) it = points_.begin();
  return endpoints_[it->second];
}

StatusOr<std::vector<std::string>> ResolveAll(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      colon + 1 == host_port.size()) {
    return InvalidArgument("dns_name '" + host_port + "' is not host:port");
  }
  std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0) {
    return Status(StatusCode::kUnavailable,
                  "resolving " + host_port + ": " + gai_strerror(rc));
  }
  std::vector<std::string> out;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)))
        out.push_back(std::string(text) + ":" +
                      std::to_string(ntohs(in->sin_port)));
    } else if (a->ai_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a->ai_addr);
      if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)))
        out.push_back("[" + std::string(text) +
                      "]:" + std::to_string(ntohs(in6->sin6_port)));
    }
  }
  freeaddrinfo(list);
  out = SortedUnique(std::move(out));
  if (out.empty()) {
    return Status(StatusCode::kUnavailable,
                  host_port + " resolved to no IPv4 or IPv6 address");
  }
  return out;
}

StatusOr<std::unique_ptr<RoutingClient>> RoutingClient::Create(
    const Options& options) {
  if (options.virtual_nodes < 1 || options.virtual_nodes > kMaxVirtualNodes) {
    return InvalidArgument("virtual_nodes must be in [1, " +
                           std::to_string(kMaxVirtualNodes) + "], got " +
                           std::to_string(options.virtual_nodes));
  }
  if (options.max_stream_restarts < 0)
    return InvalidArgument("max_stream_restarts must be >= 0");
  std::vector<std::string> endpoints;
  if (!options.dns_name.empty()) {
    auto resolved = options.resolve ? options.resolve(options.dns_name)
                                    : ResolveAll(options.dns_name);
    if (!resolved.ok()) return resolved.status();
    endpoints = std::move(resolved).value();
  } else {
    endpoints = options.endpoints;
  }
  for (const std::string& e : endpoints) {
    if (e.empty()) return InvalidArgument("an endpoint is empty");
  }
  endpoints = SortedUnique(std::move(endpoints));
  if (endpoints.empty()) {
    return InvalidArgument(options.dns_name.empty()
                               ? "no endpoints (set endpoints or dns_name)"
                               : options.dns_name + " resolved to nothing");
  }
  std::unique_ptr<RoutingClient> client(new RoutingClient(options));
  RETURN_IF_ERROR(client->SetMembership(std::move(endpoints)));
  return client;
}

RoutingClient::RoutingClient(Options options) : options_(std::move(options)) {}

Status RoutingClient::SetMembership(std::vector<std::string> endpoints) {
  endpoints = SortedUnique(std::move(endpoints));
  if (endpoints.empty()) return InvalidArgument("empty membership");
  std::map<std::string, std::shared_ptr<EndpointClient>> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& e : endpoints) {
      auto it = clients_.find(e);
      if (it != clients_.end()) next[e] = it->second;
    }
  }
  // New endpoints' clients are built outside the lock (the connect seam may
  // be slow); building a gRPC channel does not connect.
  for (const std::string& e : endpoints) {
    if (next.count(e)) continue;
    if (options_.connect) {
      ASSIGN_OR_RETURN(auto c, options_.connect(e));
      next[e] = std::shared_ptr<EndpointClient>(std::move(c));
    } else {
      InferenceClient::Options o = options_.client;
      o.address = e;
      ASSIGN_OR_RETURN(auto c, InferenceClient::Create(o));
      next[e] = std::make_shared<GrpcEndpointClient>(std::move(c));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  clients_ = std::move(next);
  down_.clear();
  RebuildRingLocked();
  return Status::Ok();
}

void RoutingClient::RebuildRingLocked() {
  std::vector<std::string> up;
  for (const auto& [e, c] : clients_) {
    if (!down_.count(e)) up.push_back(e);
  }
  // All marked down: route over everyone (see the file comment).
  if (up.empty()) {
    for (const auto& [e, c] : clients_) up.push_back(e);
  }
  ring_ = std::make_unique<HashRing>(up, options_.virtual_nodes);
}

void RoutingClient::MarkDown(const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!clients_.count(endpoint) || down_.count(endpoint)) return;
  down_.insert(endpoint);
  RebuildRingLocked();
}

void RoutingClient::MarkUp(const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (down_.erase(endpoint) > 0) RebuildRingLocked();
}

Status RoutingClient::Refresh() {
  std::vector<std::string> endpoints;
  if (options_.dns_name.empty()) {
    endpoints = Endpoints();
  } else {
    auto resolved = options_.resolve ? options_.resolve(options_.dns_name)
                                     : ResolveAll(options_.dns_name);
    if (!resolved.ok()) return resolved.status();
    endpoints = std::move(resolved).value();
  }
  return SetMembership(std::move(endpoints));
}

std::vector<std::string> RoutingClient::Endpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [e, c] : clients_) out.push_back(e);
  return out;
}

std::vector<std::string> RoutingClient::HealthyEndpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [e, c] : clients_) {
    if (!down_.count(e)) out.push_back(e);
  }
  return out;
}

std::string RoutingClient::OwnerOf(uint64_t sequence_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return ring_->Owner(sequence_id);
}

StatusOr<InferResult> RoutingClient::Infer(const InferRequest& request,
                                           std::string* served_by) {
  if (request.sequence.id != 0 || request.sequence.start ||
      request.sequence.end) {
    return InvalidArgument(
        "RoutingClient::Infer is for stateless requests; send stream chunks "
        "with InferSequenceChunk");
  }
  std::vector<std::pair<std::string, std::shared_ptr<EndpointClient>>> order;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [e, c] : clients_) {
      if (!down_.count(e)) order.emplace_back(e, c);
    }
    if (order.empty()) order.assign(clients_.begin(), clients_.end());
    const size_t first = next_round_robin_++ % order.size();
    std::rotate(order.begin(), order.begin() + static_cast<long>(first),
                order.end());
  }
  std::vector<std::string> failed;
  std::string last_error;
  for (auto& [endpoint, client] : order) {
    auto result = client->Infer(request);
    if (result.ok()) {
      if (served_by) *served_by = endpoint;
      return result;
    }
    if (!ReplicaGone(result.status()))
      return result.status().Annotate("endpoint " + endpoint);
    MarkDown(endpoint);
    failed.push_back(endpoint);
    last_error = result.status().ToString();
  }
  return Status(StatusCode::kUnavailable,
                "no endpoint answered (tried " + JoinEndpoints(failed) +
                    "; last error: " + last_error + ")");
}

StatusOr<InferResult> RoutingClient::InferSequenceChunk(
    const InferRequest& request, std::string* served_by) {
  const uint64_t id = request.sequence.id;
  if (id == 0) {
    return InvalidArgument(
        "InferSequenceChunk needs a non-zero sequence.id (0 means no "
        "sequence; use Infer)");
  }
  const std::string sequence = "sequence " + std::to_string(id);
  std::set<std::string> tried;
  while (true) {
    std::string owner;
    std::shared_ptr<EndpointClient> client;
    {
      std::lock_guard<std::mutex> lock(mu_);
      owner = ring_->Owner(id);
      auto pinned = started_on_.find(id);
      if (!request.sequence.start && pinned != started_on_.end() &&
          pinned->second != owner) {
        // Not sent: the old owner may still hold a stale state for the id
        // (if it comes back), and the new one holds none.
        const std::string was = pinned->second;
        started_on_.erase(pinned);
        return FailedPrecondition(sequence + " started on " + was +
                                  " but its owner is now " + owner +
                                  " (the endpoints changed): restart it with "
                                  "sequence_start");
      }
      client = clients_.at(owner);
    }
    if (!tried.insert(owner).second) {
      return Status(StatusCode::kUnavailable,
                    sequence + ": no reachable endpoint (tried " +
                        JoinEndpoints({tried.begin(), tried.end()}) + ")");
    }
    auto result = client->Infer(request);
    const Status s = result.ok() ? Status::Ok() : result.status();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (s.ok() && request.sequence.start && !request.sequence.end) {
        started_on_[id] = owner;
      } else if ((s.ok() && request.sequence.end) || ReplicaGone(s) ||
                 s.code() == StatusCode::kFailedPrecondition) {
        started_on_.erase(id);  // ended, or lost
      }
    }
    if (s.ok()) {
      if (served_by) *served_by = owner;
      return result;
    }
    if (!ReplicaGone(s)) return s.Annotate(sequence + " on " + owner);
    MarkDown(owner);
    // A start chunk carries no state from before, so any owner will do.
    if (request.sequence.start) continue;
    return Status(StatusCode::kUnavailable,
                  "endpoint " + owner + ", owner of " + sequence +
                      ", is unreachable or leaving (" + s.ToString() +
                      "); it is marked down and the stream's state there is "
                      "lost: restart the stream from its first step with "
                      "sequence_start (it now goes to " +
                      OwnerOf(id) + ")");
  }
}

StatusOr<RoutedStreamResult> RoutingClient::StreamWithRestart(
    const StreamRequest& request, const ChunkCallback& on_chunk) {
  if (request.sequence_id == 0)
    return InvalidArgument(
        "sequence_id must be non-zero (0 means no sequence)");
  ASSIGN_OR_RETURN(NpyArray sequence, AsSingleSequence(request.sequence));
  ASSIGN_OR_RETURN(auto chunks,
                   SplitSteps(sequence.shape[1], request.chunk_steps));
  const size_t n = chunks.size();
  RoutedStreamResult result;
  while (true) {
    std::vector<float> data;
    std::vector<int64_t> shape;
    result.chunk_endpoints.clear();
    Status failure;
    size_t k = 0;
    for (; k < n; ++k) {
      const InferRequest chunk =
          StreamChunkRequest(request, sequence, chunks[k], k, n);
      std::string endpoint;
      auto part = InferSequenceChunk(chunk, &endpoint);
      if (!part.ok()) {
        failure = part.status();
        break;
      }
      if (k == 0) {
        result.output = *part;
        result.output.shape.clear();
        result.output.data.clear();
      }
      RETURN_IF_ERROR(AppendSteps(part->shape, part->data, &shape, &data));
      result.chunk_endpoints.push_back(endpoint);
      if (on_chunk) on_chunk(static_cast<int64_t>(k), endpoint);
    }
    if (failure.ok()) {
      result.output.shape = std::move(shape);
      result.output.data = std::move(data);
      return result;
    }
    // A start chunk's FAILED_PRECONDITION is not a lost stream (e.g. the
    // model is not sequence-batched): restarting would not help.
    const bool lost =
        failure.code() == StatusCode::kUnavailable ||
        (failure.code() == StatusCode::kFailedPrecondition && k > 0);
    if (!lost || result.restarts >= options_.max_stream_restarts) {
      return failure.Annotate(
          "sequence " + std::to_string(request.sequence_id) + " chunk " +
          std::to_string(k) + " of " + std::to_string(n) + " (steps " +
          std::to_string(chunks[k].begin) + ".." +
          std::to_string(chunks[k].end) + ") after " +
          std::to_string(result.restarts) + " restart(s)");
    }
    ++result.restarts;
  }
}

}  // namespace rnnserve::client

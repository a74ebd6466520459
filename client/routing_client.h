// RoutingClient: one client in front of several rnnserve replicas, with
// sticky routing of stateful streams.
//
// A sequence-batched model keeps each stream's recurrent state (h, c) in the
// one server process that saw the stream's sequence_start; a chunk sent to any
// other replica gets FAILED_PRECONDITION ("sequence N is not active ... its
// first chunk must set sequence_start"). So:
//
//  - InferSequenceChunk routes by a consistent hash ring of sequence_id over
//    the endpoints: every chunk of a stream reaches the same replica (its
//    owner) as long as the membership does not change. Removing an endpoint
//    moves only the streams that endpoint owned (about 1/N of them); no stream
//    moves between two endpoints that both stay.
//  - Infer (stateless requests) goes round-robin over the healthy endpoints,
//    moving on to the next one when an endpoint is gone (see below), at
//    most once per endpoint per call.
//  - StreamWithRestart runs a whole sequence in chunks and, when its owner is
//    lost (UNAVAILABLE) or a chunk finds no state (FAILED_PRECONDITION),
//    restarts it from step 0 with sequence_start on the new owner.
//
// Membership: a static list of HOST:PORT endpoints, or a DNS name resolved to
// all its A/AAAA records (a Kubernetes headless Service lists one record per
// ready pod). An endpoint is gone when a call to it ends UNAVAILABLE
// (unreachable, or rnnserve answering that it is shutting down) or CANCELLED
// (gRPC cancels calls that reach a server after its graceful shutdown began;
// this client never cancels its own calls, so CANCELLED always comes from
// the replica's side). A gone endpoint is marked down and leaves
// the ring until Refresh() (which re-resolves the DNS name and forgets every
// down mark) or MarkUp(). When every endpoint is marked down the client
// routes over all of them, as if none were: being wrong about all replicas
// is likelier than all of them being dead, and a dead one fails fast.
//
// The ring (stable across processes, machines and builds, so that separate
// client processes agree on owners): each endpoint string E contributes
// `virtual_nodes` points Mix64(Fnv1a64(E + "#" + i)), i = 0..virtual_nodes-1;
// a sequence id maps to the key Mix64(Fnv1a64(its 8 bytes, little-endian)),
// and its owner is the endpoint of the first point at or after the key,
// wrapping around (ties between equal points go to the smaller endpoint
// string). Fnv1a64 is 64-bit FNV-1a; Mix64 is the MurmurHash3 fmix64
// finalizer, added because FNV-1a of strings that differ only in their last
// characters clusters on the ring. Endpoint strings must be spelled the same
// way by every client (DNS answers are formatted as "1.2.3.4:port" and
// "[::1]:port").
//
// Ownership: a RoutingClient owns one EndpointClient (by default an
// InferenceClient, i.e. one gRPC channel) per endpoint; clients of endpoints
// that leave the membership are dropped on Refresh, and calls in flight keep
// theirs alive until they return.
//
// Thread safety: every method may be called from many threads at once. One
// mutex guards the membership, the ring, the round-robin cursor and the
// endpoint each live stream started on; RPCs run outside it.
#ifndef RNNSERVE_CLIENT_ROUTING_CLIENT_H_
#define RNNSERVE_CLIENT_ROUTING_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "client/inference_client.h"
#include "server/common/status.h"

namespace rnnserve::client {

// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
uint64_t Fnv1a64(std::string_view bytes);
// MurmurHash3's fmix64 finalizer (a bijection on 64-bit values).
uint64_t Mix64(uint64_t x);
// The ring key of a sequence id (see the file comment).
uint64_t SequenceKey(uint64_t sequence_id);

// A consistent hash ring over endpoint strings; immutable once built.
// Thread-safe (const).
class HashRing {
 public:
  // Duplicate endpoints count once. virtual_nodes < 1 is treated as 1.
  HashRing(const std::vector<std::string>& endpoints, int virtual_nodes);

  // The endpoint owning `sequence_id`; "" when the ring is empty.
  const std::string& Owner(uint64_t sequence_id) const;
  bool empty() const { return points_.empty(); }

 private:
  // (point, endpoint index into endpoints_), sorted.
  std::vector<std::pair<uint64_t, size_t>> points_;
  std::vector<std::string> endpoints_;  // sorted, unique
};

// What RoutingClient needs of one replica. InferenceClient in production; a
// fake in unit tests.
class EndpointClient {
 public:
  virtual ~EndpointClient() = default;
  // One ModelInfer call; the Status code is the gRPC code (UNAVAILABLE when
  // the replica cannot be reached).
  virtual StatusOr<InferResult> Infer(const InferRequest& request) = 0;
};

// Resolves "host:port" to every A and AAAA record with getaddrinfo, as
// sorted unique "a.b.c.d:port" / "[v6]:port" strings. INVALID_ARGUMENT for a
// name without a port; UNAVAILABLE when resolution fails or finds nothing.
StatusOr<std::vector<std::string>> ResolveAll(const std::string& host_port);

// The answer of StreamWithRestart.
struct RoutedStreamResult {
  // The chunks' outputs of the final, complete run, concatenated along T.
  InferResult output;
  // How many times the sequence was restarted from step 0.
  int restarts = 0;
  // Per chunk of the final run, the endpoint that computed it.
  std::vector<std::string> chunk_endpoints;
};

class RoutingClient {
 public:
  struct Options {
    // Static membership, HOST:PORT each. Used when dns_name is empty.
    std::vector<std::string> endpoints;
    // "host:port" resolved to all its A/AAAA records at Create and on every
    // Refresh (the headless-Service pattern). Overrides `endpoints`.
    std::string dns_name;
    // Ring points per endpoint. More points spread streams more evenly
    // (each endpoint's share deviates by roughly 1/sqrt(virtual_nodes)) at
    // the cost of a larger ring; 64 keeps shares within about +-25%.
    int virtual_nodes = 64;
    // Options of each endpoint's InferenceClient (TLS, timeouts, message
    // size); `address` is replaced by the endpoint.
    InferenceClient::Options client;
    // How many times StreamWithRestart restarts one sequence before giving
    // up; each restart re-sends every chunk from step 0.
    int max_stream_restarts = 2;

    // Test seams; empty means the real thing. `connect` builds the client of
    // one endpoint (default: InferenceClient::Create with `client`);
    // `resolve` replaces ResolveAll for dns_name.
    std::function<StatusOr<std::unique_ptr<EndpointClient>>(
        const std::string& endpoint)>
        connect;
    std::function<StatusOr<std::vector<std::string>>(const std::string&)>
        resolve;
  };

  // Normalizes (dedupes endpoints) then validates: INVALID_ARGUMENT for no
  // endpoints, an empty endpoint, or virtual_nodes < 1 or > 4096;
  // resolution errors of dns_name as ResolveAll. Does not connect.
  static StatusOr<std::unique_ptr<RoutingClient>> Create(
      const Options& options);

  // A stateless request (request.sequence.id must be 0, else
  // INVALID_ARGUMENT): round-robin over the healthy endpoints; when an
  // endpoint is gone (UNAVAILABLE or CANCELLED) it is marked down and the
  // next one is tried, each at most once. Any other error is returned with
  // its code, prefixed with the endpoint. When every endpoint failed:
  // UNAVAILABLE naming them. `served_by`, if not null, gets the endpoint
  // that answered.
  StatusOr<InferResult> Infer(const InferRequest& request,
                              std::string* served_by = nullptr);

  // One chunk of a stream (request.sequence.id must be non-zero), sent to
  // OwnerOf(id). Errors:
  //  UNAVAILABLE          the owner is gone (its call ended UNAVAILABLE or
  //                       CANCELLED): it is marked down, and the message
  //                       names it and says the stream must be restarted
  //                       with sequence_start (its state is lost).
  //                       A chunk that itself sets sequence_start has no
  //                       state to lose, so it is first retried on the next
  //                       owner, once per endpoint.
  //  FAILED_PRECONDITION  the owner has no state for the stream (it moved
  //                       here from a lost replica, or expired): restart it
  //                       with sequence_start. Message prefixed with the
  //                       endpoint. Also, without sending the chunk, when
  //                       this client sent the stream's start chunk to
  //                       another endpoint than today's owner: the
  //                       membership changed mid-stream, and had it changed
  //                       back (a flapping replica, MarkUp, Refresh) the
  //                       chunk would meet a stale state and return wrong
  //                       numbers instead of an error. The client remembers
  //                       one endpoint per stream from its start chunk to
  //                       its end chunk (or its loss).
  //  others               as the server answered.
  StatusOr<InferResult> InferSequenceChunk(const InferRequest& request,
                                           std::string* served_by = nullptr);

  // Called after each chunk of StreamWithRestart succeeds, on the calling
  // thread: (chunk index in the current run, endpoint). For progress and
  // for tests that act between chunks.
  using ChunkCallback =
      std::function<void(int64_t chunk, const std::string& endpoint)>;

  // Runs `request.sequence` ([T] / [T, F] / [1, T] / [1, T, F]) as chunks of
  // request.chunk_steps with request.sequence_id through InferSequenceChunk:
  // sequence_start on the first chunk, sequence_end on the last. When a
  // non-start chunk gets FAILED_PRECONDITION, or any chunk gets UNAVAILABLE
  // (owner lost), the whole sequence restarts from step 0 with
  // sequence_start, on the id's owner at that moment, at most
  // max_stream_restarts times. Other errors (and running out of restarts)
  // return the chunk's error, naming the chunk and the restarts so far.
  // request.id_prefix and request.version are honoured as in
  // InferenceClient::StreamSequence.
  StatusOr<RoutedStreamResult> StreamWithRestart(
      const StreamRequest& request, const ChunkCallback& on_chunk = {});

  // Takes `endpoint` out of the ring and the round-robin (no-op for an
  // unknown endpoint). Its streams move to other owners.
  void MarkDown(const std::string& endpoint);
  // Puts a marked-down endpoint back.
  void MarkUp(const std::string& endpoint);
  // Re-resolves dns_name (static lists stay as they are), replaces the
  // membership with the answer, and forgets every down mark. On a
  // resolution error the membership is kept and the error returned.
  Status Refresh();

  // Every member, sorted, whether marked down or not.
  std::vector<std::string> Endpoints() const;
  // Members not marked down, sorted.
  std::vector<std::string> HealthyEndpoints() const;
  // The endpoint the next chunk of `sequence_id` goes to.
  std::string OwnerOf(uint64_t sequence_id) const;

 private:
  explicit RoutingClient(Options options);

  // Replaces the membership (locks mu_). Creates clients for new endpoints,
  // keeps those of endpoints that stay.
  Status SetMembership(std::vector<std::string> endpoints);
  void RebuildRingLocked();

  const Options options_;

  mutable std::mutex mu_;
  // endpoint -> its client; the membership.
  std::map<std::string, std::shared_ptr<EndpointClient>>
      clients_;                     // guarded by mu_
  std::set<std::string> down_;      // guarded by mu_
  std::unique_ptr<HashRing> ring_;  // guarded by mu_
  uint64_t next_round_robin_ = 0;   // guarded by mu_
  // Live streams started through this client: id -> endpoint that took the
  // start chunk. Dropped at the stream's end chunk or when it is lost.
  std::map<uint64_t, std::string> started_on_;  // guarded by mu_
};

}  // namespace rnnserve::client

#endif  // RNNSERVE_CLIENT_ROUTING_CLIENT_H_

// RoutingClient without servers: the ring's hashes against published FNV-1a
// vectors and a Python re-implementation, the consistent-hash property over
// 10000 ids, and routing / restart logic against a fake fleet whose
// "servers" keep a running sum per sequence (the state a real replica keeps),
// so a chunk reaching the wrong replica fails exactly as on rnnserve.
#include "client/routing_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace rnnserve::client {
namespace {

using ::testing::HasSubstr;

TEST(RingHashTest, Fnv1aMatchesPublishedVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

// Expected values from an independent Python implementation (the
// algorithm written out in the header comment), so that every client, in
// any process or language, agrees on owners.
TEST(RingHashTest, OwnersMatchAnIndependentImplementation) {
  EXPECT_EQ(Mix64(0), 0u);
  EXPECT_EQ(Mix64(1), 0xb456bcfc34c2cb2cull);
  EXPECT_EQ(Mix64(Fnv1a64("10.0.0.1:8001#0")), 0xb423697efaae55b7ull);
  // Input order must not matter.
  HashRing ring({"10.0.0.3:8001", "10.0.0.1:8001", "10.0.0.2:8001"}, 64);
  const std::vector<std::pair<uint64_t, char>> expected = {
      {1, '3'},
      {2, '3'},
      {3, '2'},
      {4, '1'},
      {5, '1'},
      {6, '1'},
      {7, '2'},
      {8, '3'},
      {9, '3'},
      {10, '3'},
      {12345678901234567890ull, '1'}};
  for (const auto& [id, host] : expected) {
    EXPECT_EQ(ring.Owner(id), std::string("10.0.0.") + host + ":8001")
        << "id " << id;
  }
}

std::vector<std::string> Fleet(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i)
    v.push_back("10.1.0." + std::to_string(i + 1) + ":8001");
  return v;
}

// Removing one endpoint moves only the ids it owned, and about 1/N of all.
void CheckRemoval(int n) {
  constexpr int kIds = 10000;
  const std::vector<std::string> all = Fleet(n);
  const HashRing before(all, 64);
  std::map<std::string, int> share;
  for (uint64_t id = 1; id <= kIds; ++id) ++share[before.Owner(id)];
  ASSERT_EQ(share.size(), static_cast<size_t>(n));
  for (const auto& [endpoint, count] : share) {
    // Each endpoint holds its share within the +-25% that 64 vnodes give.
    EXPECT_GT(count, 0.75 * kIds / n) << endpoint;
    EXPECT_LT(count, 1.25 * kIds / n) << endpoint;
  }
  for (int removed = 0; removed < n; ++removed) {
    std::vector<std::string> rest = all;
    rest.erase(rest.begin() + removed);
    const HashRing after(rest, 64);
    int moved = 0;
    for (uint64_t id = 1; id <= kIds; ++id) {
      const std::string& was = before.Owner(id);
      const std::string& now = after.Owner(id);
      if (was == all[removed]) {
        ++moved;
        EXPECT_NE(now, all[removed]);
      } else {
        ASSERT_EQ(now, was) << "id " << id << " moved between survivors";
      }
    }
    EXPECT_EQ(moved, share[all[removed]]);
    EXPECT_NEAR(static_cast<double>(moved) / kIds, 1.0 / n, 0.25 / n)
        << "removing " << all[removed];
  }
}

TEST(HashRingTest, RemovingOneOfThreeMovesOnlyItsStreams) { CheckRemoval(3); }
TEST(HashRingTest, RemovingOneOfFourMovesOnlyItsStreams) { CheckRemoval(4); }

TEST(HashRingTest, AddingAnEndpointTakesStreamsOnlyToIt) {
  const HashRing three(Fleet(3), 64);
  const HashRing four(Fleet(4), 64);
  for (uint64_t id = 1; id <= 10000; ++id) {
    if (four.Owner(id) != three.Owner(id)) {
      EXPECT_EQ(four.Owner(id), Fleet(4)[3]);
    }
  }
}

// A fleet of fake replicas. Model: for INT64 tokens [1, t] the answer is
// [1, t, 1], the running sum of the tokens since the sequence's start chunk;
// stateless requests get the plain tokens. Each replica keeps its own sums,
// like rnnserve keeps (h, c): a non-start chunk for an id it has not started
// gets FAILED_PRECONDITION, and a dead replica answers UNAVAILABLE.
class FakeFleet {
 public:
  class Replica : public EndpointClient {
   public:
    Replica(FakeFleet* fleet, std::string name)
        : fleet_(fleet), name_(std::move(name)) {}
    StatusOr<InferResult> Infer(const InferRequest& request) override {
      return fleet_->Handle(name_, request);
    }

   private:
    FakeFleet* fleet_;
    std::string name_;
  };

  RoutingClient::Options Options(const std::vector<std::string>& endpoints) {
    RoutingClient::Options o;
    o.endpoints = endpoints;
    o.connect =
        [this](
            const std::string& e) -> StatusOr<std::unique_ptr<EndpointClient>> {
      return std::unique_ptr<EndpointClient>(new Replica(this, e));
    };
    return o;
  }

  void Kill(const std::string& e) {
    std::lock_guard<std::mutex> lock(mu_);
    dead_.insert(e);
    state_.erase(e);
  }
  // Like a gRPC server in graceful shutdown: new calls end CANCELLED.
  void Drain(const std::string& e) {
    std::lock_guard<std::mutex> lock(mu_);
    draining_.insert(e);
  }
  // Hook run before each call (under no lock), e.g. to kill mid-stream.
  std::function<void(const std::string& endpoint, const InferRequest&)> before;

  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  StatusOr<InferResult> Handle(const std::string& e, const InferRequest& r) {
    if (before) before(e, r);
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(e);
    if (dead_.count(e))
      return Status(StatusCode::kUnavailable, "failed to connect to " + e);
    if (draining_.count(e)) return Status(StatusCode::kCancelled, "CANCELLED");
    const std::vector<int64_t> tokens = r.input.ToInt64();
    InferResult result;
    result.shape = {1, static_cast<int64_t>(tokens.size()), 1};
    const uint64_t id = r.sequence.id;
    if (id != 0 && !r.sequence.start && !state_[e].count(id)) {
      return FailedPrecondition("sequence " + std::to_string(id) +
                                " is not active");
    }
    int64_t sum = id != 0 && !r.sequence.start ? state_[e][id] : 0;
    for (int64_t t : tokens) {
      sum += t;
      result.data.push_back(static_cast<float>(id != 0 ? sum : t));
    }
    if (id != 0) {
      if (r.sequence.end) {
        state_[e].erase(id);
      } else {
        state_[e][id] = sum;
      }
    }
    return result;
  }

  std::mutex mu_;
  std::set<std::string> dead_;
  std::set<std::string> draining_;
  std::map<std::string, std::map<uint64_t, int64_t>> state_;
  std::vector<std::string> calls_;
};

InferRequest Tokens(const std::vector<int64_t>& t, uint64_t id = 0,
                    bool start = false, bool end = false) {
  InferRequest r;
  r.model = "m";
  r.input_name = "tokens";
  r.input = NpyArray::FromInt64({1, static_cast<int64_t>(t.size())}, t);
  r.sequence = {id, start, end};
  return r;
}

StreamRequest Sequence(uint64_t id, int steps, int chunk) {
  std::vector<int64_t> t;
  for (int i = 0; i < steps; ++i) t.push_back(i + 1);
  StreamRequest s;
  s.model = "m";
  s.input_name = "tokens";
  s.sequence = NpyArray::FromInt64({static_cast<int64_t>(steps)}, t);
  s.chunk_steps = chunk;
  s.sequence_id = id;
  return s;
}

// Prefix sums of 1..steps: the whole-sequence answer.
std::vector<float> PrefixSums(int steps) {
  std::vector<float> v;
  int64_t sum = 0;
  for (int i = 1; i <= steps; ++i) v.push_back(static_cast<float>(sum += i));
  return v;
}

TEST(RoutingClientTest, CreateValidates) {
  FakeFleet fleet;
  EXPECT_EQ(RoutingClient::Create(fleet.Options({})).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RoutingClient::Create(fleet.Options({"a:1", ""})).status().code(),
            StatusCode::kInvalidArgument);
  auto o = fleet.Options({"a:1"});
  o.virtual_nodes = 0;
  EXPECT_EQ(RoutingClient::Create(o).status().code(),
            StatusCode::kInvalidArgument);
  auto c = RoutingClient::Create(fleet.Options({"b:1", "a:1", "b:1"}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->Endpoints(), (std::vector<std::string>{"a:1", "b:1"}));
}

TEST(RoutingClientTest, StatelessRoundRobinSkipsDeadEndpointsOnce) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1", "c:1"}));
  ASSERT_TRUE(client.ok());
  std::map<std::string, int> served;
  for (int i = 0; i < 9; ++i) {
    std::string by;
    auto r = (*client)->Infer(Tokens({4, 5}), &by);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->data, (std::vector<float>{4, 5}));
    ++served[by];
  }
  EXPECT_EQ(served,
            (std::map<std::string, int>{{"a:1", 3}, {"b:1", 3}, {"c:1", 3}}));

  fleet.Kill("b:1");
  for (int i = 0; i < 6; ++i) {
    std::string by;
    ASSERT_TRUE((*client)->Infer(Tokens({1}), &by).ok());
    EXPECT_NE(by, "b:1");
  }
  EXPECT_EQ((*client)->HealthyEndpoints(),
            (std::vector<std::string>{"a:1", "c:1"}));
  // b was tried once, then left the rotation.
  const auto calls = fleet.calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "b:1"), 3 + 1);

  // Every replica dead: UNAVAILABLE after trying each once.
  fleet.Kill("a:1");
  fleet.Kill("c:1");
  const size_t before = fleet.calls().size();
  auto r = (*client)->Infer(Tokens({1}));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("no endpoint answered"));
  EXPECT_EQ(fleet.calls().size() - before, 2u);  // a and c (b already down)
  EXPECT_EQ((*client)->Infer(Tokens({1}, 7)).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(RoutingClientTest, ChunksGoToTheOwnerAndLossIsReported) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1", "c:1"}));
  ASSERT_TRUE(client.ok());
  const HashRing ring({"a:1", "b:1", "c:1"}, 64);
  for (uint64_t id = 1; id <= 50; ++id) {
    EXPECT_EQ((*client)->OwnerOf(id), ring.Owner(id));
    std::string by;
    ASSERT_TRUE((*client)->InferSequenceChunk(Tokens({1}, id, true), &by).ok());
    EXPECT_EQ(by, ring.Owner(id));
    ASSERT_TRUE((*client)->InferSequenceChunk(Tokens({2}, id), &by).ok());
    EXPECT_EQ(by, ring.Owner(id));
  }
  // Find a stream owned by b; kill b.
  uint64_t on_b = 1;
  while (ring.Owner(on_b) != "b:1") ++on_b;
  fleet.Kill("b:1");
  auto lost = (*client)->InferSequenceChunk(Tokens({3}, on_b));
  EXPECT_EQ(lost.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(lost.status().message(), HasSubstr("b:1"));
  EXPECT_THAT(lost.status().message(), HasSubstr("sequence_start"));
  EXPECT_EQ((*client)->HealthyEndpoints(),
            (std::vector<std::string>{"a:1", "c:1"}));
  // Only b's streams moved; the next chunk of one finds no state on its new
  // owner, and says so.
  for (uint64_t id = 1; id <= 50; ++id) {
    if (ring.Owner(id) != "b:1") {
      EXPECT_EQ((*client)->OwnerOf(id), ring.Owner(id));
    }
  }
  uint64_t other_on_b = on_b + 1;
  while (ring.Owner(other_on_b) != "b:1") ++other_on_b;
  auto moved = (*client)->InferSequenceChunk(Tokens({3}, other_on_b));
  EXPECT_EQ(moved.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(moved.status().message(),
              HasSubstr((*client)->OwnerOf(other_on_b)));
}

TEST(RoutingClientTest, StartChunkFailsOverToTheNextOwner) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1", "c:1"}));
  ASSERT_TRUE(client.ok());
  uint64_t id = 1;
  while ((*client)->OwnerOf(id) != "a:1") ++id;
  fleet.Kill("a:1");
  std::string by;
  ASSERT_TRUE((*client)->InferSequenceChunk(Tokens({1}, id, true), &by).ok());
  EXPECT_NE(by, "a:1");
  EXPECT_EQ(by, (*client)->OwnerOf(id));
}

TEST(RoutingClientTest, StreamWithRestartRecoversFromOwnerLoss) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1", "c:1"}));
  ASSERT_TRUE(client.ok());
  uint64_t id = 1;
  while ((*client)->OwnerOf(id) != "c:1") ++id;
  // Kill the owner after its third chunk.
  auto result = (*client)->StreamWithRestart(
      Sequence(id, 40, 8), [&](int64_t chunk, const std::string& endpoint) {
        if (chunk == 2 && endpoint == "c:1") fleet.Kill("c:1");
      });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->restarts, 1);
  EXPECT_EQ(result->output.shape, (std::vector<int64_t>{1, 40, 1}));
  EXPECT_EQ(result->output.data, PrefixSums(40));
  EXPECT_EQ(result->chunk_endpoints.size(), 5u);
  for (const auto& e : result->chunk_endpoints)
    EXPECT_EQ(e, (*client)->OwnerOf(id));

  // Another client (another process, say) marked the owner down between
  // chunks while it still runs: the new owner has no state
  // (FAILED_PRECONDITION), so the stream restarts there.
  uint64_t id2 = 1;
  while ((*client)->OwnerOf(id2) != "a:1") ++id2;
  auto moved = (*client)->StreamWithRestart(
      Sequence(id2, 20, 4), [&](int64_t chunk, const std::string& endpoint) {
        if (chunk == 1 && endpoint == "a:1") (*client)->MarkDown("a:1");
      });
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(moved->restarts, 1);
  EXPECT_EQ(moved->output.data, PrefixSums(20));
  EXPECT_NE(moved->chunk_endpoints.front(), "a:1");
  EXPECT_EQ(moved->chunk_endpoints.front(), (*client)->OwnerOf(id2));
}

// The owner flaps: marked down mid-stream (the stream restarts elsewhere),
// then back up mid-restart. Its stale state for the id must not be used:
// the chunk is refused before it is sent, and the stream restarts again.
TEST(RoutingClientTest, FlappingOwnerNeverServesAStaleState) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1", "c:1"}));
  ASSERT_TRUE(client.ok());
  uint64_t id = 1;
  while ((*client)->OwnerOf(id) != "a:1") ++id;
  int run = 0;
  auto result = (*client)->StreamWithRestart(
      Sequence(id, 20, 4), [&](int64_t chunk, const std::string&) {
        if (chunk == 0) ++run;
        if (chunk == 2 && run == 1) (*client)->MarkDown("a:1");
        if (chunk == 1 && run == 2) (*client)->MarkUp("a:1");
      });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->restarts, 2);
  EXPECT_EQ(result->output.data, PrefixSums(20));
  EXPECT_THAT(result->chunk_endpoints, ::testing::Each(::testing::Eq("a:1")));

  // The same through single chunks: a's state for the id is stale.
  uint64_t id2 = id + 1;
  while ((*client)->OwnerOf(id2) != "a:1") ++id2;
  ASSERT_TRUE((*client)->InferSequenceChunk(Tokens({1}, id2, true)).ok());
  ASSERT_TRUE((*client)->InferSequenceChunk(Tokens({2}, id2)).ok());
  (*client)->MarkDown("a:1");
  ASSERT_TRUE((*client)->InferSequenceChunk(Tokens({1}, id2, true)).ok());
  (*client)->MarkUp("a:1");
  auto stale = (*client)->InferSequenceChunk(Tokens({2}, id2));
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(stale.status().message(), HasSubstr("restart it"));
}

// A replica in graceful shutdown cancels new calls: that counts as leaving,
// for stateless requests and for streams alike.
TEST(RoutingClientTest, CancelledByADrainingReplicaCountsAsGone) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1", "c:1"}));
  ASSERT_TRUE(client.ok());
  uint64_t id = 1;
  while ((*client)->OwnerOf(id) != "b:1") ++id;
  auto result = (*client)->StreamWithRestart(
      Sequence(id, 16, 4), [&](int64_t chunk, const std::string& endpoint) {
        if (chunk == 0 && endpoint == "b:1") fleet.Drain("b:1");
      });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->restarts, 1);
  EXPECT_EQ(result->output.data, PrefixSums(16));
  EXPECT_EQ((*client)->HealthyEndpoints(),
            (std::vector<std::string>{"a:1", "c:1"}));
  (*client)->MarkUp("b:1");
  for (int i = 0; i < 6; ++i) {
    std::string by;
    ASSERT_TRUE((*client)->Infer(Tokens({1}), &by).ok());
    EXPECT_NE(by, "b:1");
  }
}

TEST(RoutingClientTest, StreamWithRestartGivesUpAfterMaxRestarts) {
  FakeFleet fleet;
  auto options = fleet.Options({"a:1", "b:1"});
  options.max_stream_restarts = 1;
  auto client = RoutingClient::Create(options);
  ASSERT_TRUE(client.ok());
  // Whoever owns the stream dies after its first chunk, every time.
  auto result = (*client)->StreamWithRestart(
      Sequence(9, 10, 2), [&](int64_t chunk, const std::string& endpoint) {
        if (chunk == 0) fleet.Kill(endpoint);
      });
  EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("after 1 restart(s)"));
}

TEST(RoutingClientTest, RefreshReresolvesAndForgetsDownMarks) {
  FakeFleet fleet;
  std::vector<std::string> dns = {"10.0.0.1:80", "10.0.0.2:80"};
  auto options = fleet.Options({});
  options.dns_name = "svc.example:80";
  options.resolve =
      [&](const std::string& name) -> StatusOr<std::vector<std::string>> {
    EXPECT_EQ(name, "svc.example:80");
    return dns;
  };
  auto client = RoutingClient::Create(options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->Endpoints(), dns);
  (*client)->MarkDown("10.0.0.1:80");
  EXPECT_EQ((*client)->HealthyEndpoints(),
            (std::vector<std::string>{"10.0.0.2:80"}));
  for (uint64_t id = 1; id < 100; ++id)
    EXPECT_EQ((*client)->OwnerOf(id), "10.0.0.2:80");
  dns = {"10.0.0.1:80", "10.0.0.3:80"};
  ASSERT_TRUE((*client)->Refresh().ok());
  EXPECT_EQ((*client)->HealthyEndpoints(), dns);
  const HashRing ring(dns, 64);
  for (uint64_t id = 1; id < 100; ++id)
    EXPECT_EQ((*client)->OwnerOf(id), ring.Owner(id));
}

TEST(RoutingClientTest, AllMarkedDownRoutesOverEveryone) {
  FakeFleet fleet;
  auto client = RoutingClient::Create(fleet.Options({"a:1", "b:1"}));
  ASSERT_TRUE(client.ok());
  (*client)->MarkDown("a:1");
  (*client)->MarkDown("b:1");
  EXPECT_TRUE((*client)->HealthyEndpoints().empty());
  EXPECT_TRUE((*client)->Infer(Tokens({1})).ok());
  EXPECT_EQ((*client)->OwnerOf(5), HashRing({"a:1", "b:1"}, 64).Owner(5));
}

// Many threads stream, send stateless requests and flap one endpoint's
// membership at once (run under TSan too): every stream still ends with the
// whole-sequence answer, restarting as often as its owner changed.
TEST(RoutingClientTest, ConcurrentStreamsWhileMembershipFlaps) {
  FakeFleet fleet;
  auto options = fleet.Options({"a:1", "b:1", "c:1"});
  options.max_stream_restarts = 1000;
  auto created = RoutingClient::Create(options);
  ASSERT_TRUE(created.ok());
  RoutingClient& client = **created;
  std::atomic<bool> stop{false};
  std::thread flapper([&] {
    for (int i = 0; !stop.load(); ++i) {
      if (i % 3 == 0) client.MarkDown("b:1");
      if (i % 3 == 1) client.MarkUp("b:1");
      if (i % 3 == 2) {
        EXPECT_TRUE(client.Refresh().ok());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  std::atomic<int> stateless_failures{0};
  std::thread stateless([&] {
    while (!stop.load()) {
      if (!client.Infer(Tokens({2, 3})).ok()) ++stateless_failures;
    }
  });
  constexpr int kThreads = 8, kStreamsEach = 25;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kStreamsEach; ++k) {
        auto r = client.StreamWithRestart(Sequence(1 + t * 100 + k, 24, 3));
        if (!r.ok() || r->output.data != PrefixSums(24)) {
          ++wrong;
          ADD_FAILURE() << (r.ok() ? "wrong numbers" : r.status().ToString());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  stop = true;
  flapper.join();
  stateless.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(stateless_failures.load(), 0);
}

TEST(ResolveAllTest, LocalhostAndBadNames) {
  auto v = ResolveAll("localhost:8001");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_THAT(*v, ::testing::Contains("127.0.0.1:8001"));
  auto v4 = ResolveAll("127.0.0.1:9");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(*v4, (std::vector<std::string>{"127.0.0.1:9"}));
  auto v6 = ResolveAll("[::1]:9");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(*v6, (std::vector<std::string>{"[::1]:9"}));
  EXPECT_EQ(ResolveAll("no-port").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveAll("no-such-host.invalid:1").status().code(),
            StatusCode::kUnavailable);
}

// The real transport: an endpoint with nothing listening answers
// UNAVAILABLE and is skipped.
TEST(RoutingClientTest, RefusedConnectionIsUnavailable) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string endpoint =
      "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  close(fd);  // nothing listens there now
  RoutingClient::Options options;
  options.endpoints = {endpoint};
  options.client.timeout = std::chrono::milliseconds(5000);
  auto client = RoutingClient::Create(options);
  ASSERT_TRUE(client.ok());
  auto r = (*client)->Infer(Tokens({1}));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable)
      << r.status().ToString();
  auto chunk = (*client)->InferSequenceChunk(Tokens({1}, 3));
  EXPECT_EQ(chunk.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(chunk.status().message(), HasSubstr(endpoint));
}

}  // namespace
}  // namespace rnnserve::client

// The serve mode's parts without a model: the HTTP server over a real loopback socket (request
// limits, streamed replies, a client that hangs up) and the request parser's checks, including
// [serve] in run.toml. Fast and model-free, so sanitizer builds run them too.
#include "kivi_catch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "host_config.h"
#include "kivi/config/config_table.h"
#include "serve/api_request.h"
#include "serve/http_server.h"

using Catch::Contains;
using kivi::serve::ApiError;
using nlohmann::json;

namespace {

// A connected socket to 127.0.0.1:port.
int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

// Everything the server writes on `fd` until it closes the connection.
std::string read_all(int fd) {
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;)
    reply.append(buffer, static_cast<size_t>(n));
  return reply;
}

// Sends `request` on a new connection and returns everything the server writes before closing.
// The client then shuts down its sending side (half_close), so that a kept-alive connection ends
// after the answers; without, the server ends it (an error, Connection: close, a timeout).
std::string round_trip(int port, const std::string& request, bool half_close = true) {
  const int fd = connect_loopback(port);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  if (half_close) ::shutdown(fd, SHUT_WR);
  std::string reply = read_all(fd);
  ::close(fd);
  return reply;
}

struct RunningServer {
  kivi::serve::HttpServer server;
  std::atomic<bool> stop{false};
  std::thread thread;
  RunningServer(kivi::serve::HttpLimits limits, kivi::serve::HttpHandler handler)
      : server("127.0.0.1", 0, limits, std::move(handler)), thread([this] { server.run(stop); }) {}
  ~RunningServer() {
    stop = true;
    thread.join();
    server.drain(2000);
  }
};

std::string status_line(const std::string& reply) {
  return reply.substr(0, reply.find("\r\n"));
}

}  // namespace

TEST_CASE("http server: requests, limits and streamed replies", "[serve]") {
  std::atomic<int> abandoned{0};
  kivi::serve::HttpLimits limits;
  limits.max_body_bytes = 1000;
  limits.read_timeout_ms = 500;
  RunningServer s(limits, [&](const kivi::serve::HttpRequest& r, kivi::serve::HttpConnection& c) {
    if (r.path == "/stream") {
      c.begin_stream(200, "text/event-stream");
      for (int i = 0; i < 3; ++i) c.write("data: " + std::to_string(i) + "\n\n");
      return;
    }
    if (r.path == "/wait") {  // a long stream whose client leaves: seen once a write fails
      c.begin_stream(200, "text/event-stream");
      for (int i = 0; i < 100 && !c.peer_closed(); ++i) {
        c.write(": working\n\n");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (c.peer_closed()) ++abandoned;
      return;
    }
    if (r.path == "/slow") {  // a job whose client half-closed after its request: not a leave
      for (int i = 0; i < 10; ++i) {
        if (c.peer_closed()) {
          ++abandoned;
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      c.send(200, "text/plain", "done");
      return;
    }
    if (r.path == "/throw") throw std::runtime_error("handler failed");
    c.send(200, "text/plain",
           r.method + " " + r.path + " [" + r.body + "] " + r.headers.at("x-key"));
  });
  const int port = s.server.port();
  CHECK(port > 0);

  const std::string ok =
      round_trip(port, "POST /echo?q=1 HTTP/1.1\r\nX-Key:  v \r\nContent-Length: 5\r\n\r\nhello");
  CHECK(status_line(ok) == "HTTP/1.1 200 OK");
  CHECK_THAT(ok, Contains("Content-Length: 20\r\n"));
  CHECK_THAT(ok, Contains("\r\n\r\nPOST /echo [hello] v"));

  // Streams go out as chunks (HTTP/1.1), or until the close (HTTP/1.0).
  const std::string stream = round_trip(port, "GET /stream HTTP/1.1\r\n\r\n");
  CHECK_THAT(stream, Contains("Content-Type: text/event-stream"));
  CHECK_THAT(stream, Contains("Transfer-Encoding: chunked"));
  CHECK_THAT(stream,
             Contains("\r\n9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"));
  const std::string old_stream = round_trip(port, "GET /stream HTTP/1.0\r\n\r\n", false);
  CHECK(status_line(old_stream) == "HTTP/1.0 200 OK");
  CHECK_THAT(old_stream, Contains("\r\n\r\ndata: 0\n\ndata: 1\n\ndata: 2\n\n"));

  // Keep-alive and pipelining: two requests in one write, answered in order on one connection.
  const std::string two =
      round_trip(port,
                 "GET /echo HTTP/1.1\r\nX-Key: a\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nX-Key: b\r\nContent-Length: 2\r\n\r\nhi");
  CHECK_THAT(two, Contains("GET /echo [] a"));
  CHECK(two.find("GET /echo [] a") < two.find("POST /echo [hi] b"));
  // Connection: close ends it after the answer, without the client's help.
  CHECK_THAT(round_trip(port, "GET /echo HTTP/1.1\r\nX-Key: c\r\nConnection: close\r\n\r\n", false),
             Contains("GET /echo [] c"));
  // Chunked request bodies, within and beyond the limit.
  CHECK_THAT(round_trip(port,
                        "POST /echo HTTP/1.1\r\nX-Key: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
             Contains("POST /echo [hello world] d"));
  CHECK(
      status_line(round_trip(port, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" +
                                       std::string(1001, 'x') + "\r\n0\r\n\r\n")) ==
      "HTTP/1.1 413 Payload Too Large");
  // Expect: 100-continue: the client sends its body once told to.
  {
    const int fd = connect_loopback(port);
    const std::string head =
        "POST /echo HTTP/1.1\r\nX-Key: e\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
    ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
    char buffer[256];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    CHECK(std::string(buffer, static_cast<size_t>(std::max<ssize_t>(n, 0))) ==
          "HTTP/1.1 100 Continue\r\n\r\n");
    ::send(fd, "abc", 3, MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    CHECK_THAT(read_all(fd), Contains("POST /echo [abc] e"));
    ::close(fd);
  }

  CHECK(status_line(round_trip(port, "garbage\r\n\r\n")) == "HTTP/1.1 400 Bad Request");
  CHECK(status_line(round_trip(port, "GET nothing HTTP/1.1\r\n\r\n")) ==
        "HTTP/1.1 400 Bad Request");
  CHECK(status_line(round_trip(port, "GET / HTTP/1.1\r\nno colon\r\n\r\n")) ==
        "HTTP/1.1 400 Bad Request");
  CHECK(status_line(round_trip(port, "POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n")) ==
        "HTTP/1.1 400 Bad Request");
  CHECK(status_line(round_trip(port, "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")) ==
        "HTTP/1.1 413 Payload Too Large");
  CHECK(status_line(
            round_trip(port, "GET / HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n")) ==
        "HTTP/1.1 431 Request Header Fields Too Large");
  // A body that never comes: 408 after read_timeout_ms.
  CHECK(status_line(round_trip(port, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", false)) ==
        "HTTP/1.1 408 Request Timeout");
  // Nor can a client trickling a byte every 50 ms hold the connection: the deadline is the whole
  // request's (500 ms here), not each read's.
  {
    const int fd = connect_loopback(port);
    const auto start = std::chrono::steady_clock::now();
    const std::string slow = "GET /echo HTTP/1.1\r\nX-Key: " + std::string(200, 'k');
    for (char c : slow) {
      if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) break;  // answered
    }
    CHECK(status_line(read_all(fd)) == "HTTP/1.1 408 Request Timeout");
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
    ::close(fd);
  }
  const std::string failed = round_trip(port, "GET /throw HTTP/1.1\r\n\r\n");
  CHECK(status_line(failed) == "HTTP/1.1 500 Internal Server Error");
  CHECK_THAT(failed, Contains("handler failed"));

  // A client that shuts down its sending side after its request still gets its answer.
  {
    const std::string reply = round_trip(port, "GET /slow HTTP/1.1\r\n\r\n");
    CHECK(status_line(reply) == "HTTP/1.1 200 OK");
    CHECK_THAT(reply, Contains("\r\n\r\ndone"));
    CHECK(abandoned == 0);
  }
  // A client that sends its request and hangs up: the handler sees peer_closed() once its
  // writes meet the closed connection (an end of input alone could be a half-close).
  {
    const int fd = connect_loopback(port);
    const std::string request = "GET /wait HTTP/1.1\r\n\r\n";
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::close(fd);
  }
  for (int i = 0; i < 100 && abandoned == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(abandoned == 1);
  CHECK(status_line(round_trip(port, "GET /echo HTTP/1.1\r\nX-Key: k\r\n\r\n")) ==
        "HTTP/1.1 200 OK");  // still serving
}

TEST_CASE("http server: stopping ends idle kept-alive connections at once", "[serve]") {
  kivi::serve::HttpLimits limits;
  limits.read_timeout_ms = 30000;
  int fd = -1;
  std::chrono::steady_clock::duration stopping{};
  {
    RunningServer s(limits, [](const kivi::serve::HttpRequest&, kivi::serve::HttpConnection& c) {
      c.send(200, "text/plain", "ok");
    });
    fd = connect_loopback(s.server.port());
    const std::string request = "GET / HTTP/1.1\r\n\r\n";  // kept alive: no Connection: close
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buffer[512];
    CHECK(::recv(fd, buffer, sizeof buffer, 0) > 0);
    CHECK(s.server.open_connections() == 1);  // waiting for the next request
    const auto start = std::chrono::steady_clock::now();
    s.stop = true;
    s.thread.join();
    s.server.drain(10000);
    stopping = std::chrono::steady_clock::now() - start;
    CHECK(s.server.open_connections() == 0);
    s.thread = std::thread([] {});  // the destructor joins it
  }
  CHECK(stopping < std::chrono::seconds(2));  // not read_timeout_ms (30 s)
  CHECK(read_all(fd).empty());                // closed, nothing more said
  ::close(fd);
}

TEST_CASE("http server: beyond max_connections, 503 at once", "[serve]") {
  kivi::serve::HttpLimits limits;
  limits.max_connections = 1;
  limits.read_timeout_ms = 2000;
  RunningServer s(limits, [](const kivi::serve::HttpRequest&, kivi::serve::HttpConnection& c) {
    c.send(200, "text/plain", "ok");
  });
  // The first connection holds the only slot while it sends nothing.
  const int idle = connect_loopback(s.server.port());
  for (int i = 0; i < 100 && s.server.open_connections() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const std::string busy = round_trip(s.server.port(), "GET / HTTP/1.1\r\n\r\n");
  CHECK(status_line(busy) == "HTTP/1.1 503 Service Unavailable");
  CHECK_THAT(busy, Contains("too many open connections"));
  ::close(idle);
}

TEST_CASE("api requests: fields are checked with the field, the value and what was expected",
          "[serve]") {
  kivi::serve::ServedModel model;
  model.name = "tiny";
  model.context = 32;
  model.vocab_size = 100;
  model.eos_ids = {1};
  const kivi::serve::ApiLimits limits;
  auto parse = [&](const std::string& body) {
    return kivi::serve::parse_completion_request(json::parse(body), model, limits, false);
  };
  auto error = [&](const std::string& body) -> ApiError {
    try {
      parse(body);
    } catch (const ApiError& e) {
      return e;
    }
    FAIL("no error for " << body);
    return {};
  };

  const auto r =
      parse(R"({"model": "tiny", "prompt": [[3, 4], [5]], "n": 2, "max_tokens": 5, "temperature": 0,
                          "stop": "x", "logprobs": 2, "echo": true, "seed": 9})");
  CHECK(r.prompts == std::vector<std::vector<int64_t>>{{3, 4}, {5}});
  CHECK(r.n == 2);
  CHECK(r.max_tokens == 5);
  CHECK(r.sampling.temperature == 0);
  CHECK(r.stop == std::vector<std::string>{"x"});
  CHECK(r.logprobs == 2);
  CHECK(r.echo);
  CHECK(r.seed == 9);
  CHECK(parse(R"({"prompt": [3]})").max_tokens == 16);           // OpenAI's default
  CHECK(parse(R"({"prompt": [3]})").sampling.temperature == 1);  // OpenAI's default
  CHECK(parse(R"({"prompt": [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]})")
            .max_tokens == 14);

  CHECK(error(R"({"prompt": [3], "model": "other"})").status == 404);
  CHECK_THAT(error(R"({"prompt": [3], "max_tokens": -1})").message,
             Contains("max_tokens = -1: expected an integer >= 0"));
  CHECK_THAT(error(R"({"prompt": [3], "max_tokens": 2.5})").message,
             Contains("max_tokens: expected an integer, got a number"));
  CHECK_THAT(error(R"({"prompt": [3], "temperature": 3})").message, Contains("temperature"));
  CHECK_THAT(error(R"({"prompt": [3], "top_p": 0})").message, Contains("top_p"));
  CHECK_THAT(error(R"({"prompt": [3], "n": 17})").message, Contains("n = 17"));
  CHECK_THAT(error(R"({"prompt": [3], "logprobs": 21})").message, Contains("logprobs = 21"));
  CHECK_THAT(error(R"({"prompt": [3], "stop": [""]})").message, Contains("empty stop string"));
  CHECK_THAT(error(R"({"prompt": [3], "stream": "yes"})").message,
             Contains("stream: expected true or false"));
  CHECK_THAT(error(R"({"prompt": [3], "presence_penalty": 0.5})").message,
             Contains("not supported"));
  CHECK_THAT(error(R"({"prompt": [100]})").message, Contains("outside the vocabulary"));
  CHECK_THAT(error(R"({"prompt": "text"})").message, Contains("no tokenizer.json"));
  CHECK_THAT(error(R"({"prompt": [[3], []]})").message, Contains("prompt[1] is empty"));
  CHECK_THAT(error(R"({"prompt": [3], "max_tokens": 40})").message,
             Contains("exceed this model's context of 32"));
  CHECK_THAT(
      error(R"({"prompt": [3], "n": 16, "max_tokens": 1, "temperature": 0, "best_of": 2})").message,
      Contains("best_of"));
  CHECK_THAT(error(R"([1])").message, Contains("JSON object"));
  // The body's text, as the server reads it: malformed, too large a number, too deep.
  auto body_error = [&](const std::string& text) -> ApiError {
    try {
      kivi::serve::parse_completion_body(text, model, limits, false);
    } catch (const ApiError& e) {
      return e;
    }
    FAIL("no error for " << text);
    return {};
  };
  CHECK(kivi::serve::parse_completion_body(R"({"prompt": [3]})", model, limits, false).n == 1);
  CHECK_THAT(body_error("{\"prompt\": ").message, Contains("not valid JSON"));
  CHECK_THAT(body_error(R"({"prompt": [3], "n": 1e400})").message, Contains("not valid JSON"));
  const ApiError deep =
      body_error("{\"prompt\": " + std::string(65, '[') + "3" + std::string(65, ']') + "}");
  CHECK(deep.status == 400);
  CHECK_THAT(deep.message, Contains("nested more than 64 levels"));
  auto chat = [&](const std::string& body) {
    try {
      kivi::serve::parse_completion_request(json::parse(body), model, limits, true);
    } catch (const ApiError& e) {
      return e.message;
    }
    return std::string();
  };
  CHECK_THAT(chat(R"({"messages": [{"role": "user", "content": "hi"}]})"),
             Contains("no chat template"));
}

TEST_CASE("[serve] in run.toml: defaults, values and bad keys", "[serve]") {
  auto parse = [](const std::string& text) {
    return kivi::host::parse_host_config(kivi::ConfigTable::parse_text(text, "run.toml"),
                                         "run.toml");
  };
  const auto defaults = parse("mode = \"serve\"\n");
  CHECK(defaults.serve.host == "127.0.0.1");
  CHECK(defaults.serve.port == 8000);
  CHECK(defaults.serve.max_batch == 8);
  const auto set = parse(
      "mode = \"serve\"\n[serve]\nport = 0\nmax_batch = 3\nmax_queue = 5\nchat_template = "
      "\"t.jinja\"\n");
  CHECK(set.serve.port == 0);
  CHECK(set.serve.max_batch == 3);
  CHECK(set.serve.max_queue == 5);
  CHECK(set.serve.chat_template.filename() == "t.jinja");
  CHECK_THROWS_WITH(parse("[serve]\nport = 70000\n"), Contains("port"));
  CHECK_THROWS_WITH(parse("[serve]\nmax_batch = 0\n"), Contains("max_batch"));
  CHECK_THROWS_WITH(parse("[serve]\nmax_bach = 4\n"), Contains("unknown key"));
  CHECK(defaults.serve.prefix_sharing);
  CHECK(defaults.serve.stats_seconds == 0);
  CHECK_FALSE(parse("[serve]\nprefix_sharing = false\n").serve.prefix_sharing);
}

TEST_CASE("[cache] memory_budget: bytes, a unit or a fraction, and never a plugin option",
          "[serve]") {
  auto parse = [](const std::string& text) {
    return kivi::host::parse_host_config(
        kivi::ConfigTable::parse_text("mode = \"serve\"\n[cache]\nbackend = \"kivi\"\n" + text,
                                      "run.toml"),
        "run.toml");
  };
  CHECK_FALSE(parse("").cache_budget.set());
  CHECK(parse("memory_budget = 1000000\n").cache_budget.bytes == 1000000);
  CHECK(parse("memory_budget = \"40GiB\"\n").cache_budget.bytes == int64_t{40} << 30);
  CHECK(parse("memory_budget = \"512 MB\"\n").cache_budget.bytes == 512000000);
  CHECK(parse("memory_budget = 0.9\n").cache_budget.fraction == 0.9);
  // The plugin sees its own options only.
  const auto with_bits = parse("k_bits = 4\nmemory_budget = \"1GB\"\n");
  CHECK_THAT(with_bits.cache.options_toml, Contains("k_bits"));
  CHECK_THAT(with_bits.cache.options_toml, !Contains("memory_budget"));
  for (const char* bad :
       {"memory_budget = 0\n", "memory_budget = 1.5\n", "memory_budget = \"40 parsecs\"\n",
        "memory_budget = \"lots\"\n", "memory_budget = true\n"})
    CHECK_THROWS_WITH(parse(bad), Contains("run.toml") && Contains("memory_budget") &&
                                      Contains("expected bytes"));
}

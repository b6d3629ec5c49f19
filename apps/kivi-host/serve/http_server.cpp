#include "serve/http_server.h"

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "kivi/util/error.h"
#include "serve/http_request_reader.h"

namespace kivi::serve {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

struct HttpServer::Listener {
  net::io_context io;
  tcp::acceptor acceptor{io};
};

namespace {

void close_on_exec(int fd) {
  ::fcntl(fd, F_SETFD, ::fcntl(fd, F_GETFD) | FD_CLOEXEC);
}

// One connection's socket, driven from its own thread through a private io_context: every
// operation is started asynchronously and the context run until it ends or its deadline passes
// (Asio's synchronous calls wait without a time limit). A late operation is cancelled, not the
// socket closed, so that a 408 can still be sent.
class Link {
 public:
  Link(tcp::socket socket, net::io_context& io) : io_(io), socket_(std::move(socket)) {}

  // start(socket, handler) begins one operation; returns how it ended (beast::error::timeout
  // when the deadline passed first). bytes() is what it moved.
  // With `stop`, the operation also ends (as a timeout) within 200 ms of it becoming true: a
  // server that stops must not wait read_timeout_ms for idle kept-alive connections.
  template <class Start>
  beast::error_code run(Clock::time_point deadline, Start&& start,
                        const std::atomic<bool>* stop = nullptr) {
    beast::error_code result;
    bool finished = false;
    start(socket_, [this, &result, &finished](beast::error_code ec, size_t bytes) {
      result = ec;
      bytes_ = bytes;
      finished = true;
    });
    io_.restart();
    if (!stop) {
      io_.run_until(deadline);
    } else {
      while (!finished && Clock::now() < deadline && !stop->load()) {
        io_.run_until(std::min(deadline, Clock::now() + std::chrono::milliseconds(200)));
        io_.restart();
      }
    }
    if (finished) return result;
    beast::error_code ignored;
    socket_.cancel(ignored);
    io_.restart();
    io_.run();  // the cancelled operation's handler
    return result == net::error::operation_aborted ? beast::error::timeout : result;
  }
  size_t bytes() const { return bytes_; }
  int native_handle() { return socket_.native_handle(); }

  // Ends our side, then reads (for at most `linger`, boundedly) what the client still sends:
  // closing a socket with unread input makes the kernel send a reset, which can destroy the
  // response in flight.
  void close_gracefully(std::chrono::milliseconds linger = std::chrono::milliseconds(200)) {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    const Clock::time_point until = Clock::now() + linger;
    char sink[8192];
    for (size_t total = 0; !ec && total < 256 * 1024; total += bytes_)
      ec = run(until, [&sink](tcp::socket& s, auto handler) {
        s.async_read_some(net::buffer(sink), std::move(handler));
      });
    socket_.close(ec);
  }

 private:
  net::io_context& io_;
  tcp::socket socket_;
  size_t bytes_ = 0;
};

// The reply side of one request over a Link.
class BeastConnection final : public HttpConnection {
 public:
  BeastConnection(Link& link, const HttpLimits& limits, unsigned version, bool keep_alive)
      : link_(link), limits_(limits), version_(version), keep_alive_(keep_alive) {}

  bool send(int status, std::string_view content_type, std::string_view body) override {
    responded_ = true;
    http::response<http::string_body> response;
    response.version(version_);
    response.result(static_cast<unsigned>(status));
    response.set(http::field::content_type, content_type);
    response.keep_alive(keep_alive_);
    response.body() = std::string(body);
    response.prepare_payload();
    return done(link_.run(write_deadline(), [&response](tcp::socket& s, auto handler) {
      http::async_write(s, response, std::move(handler));
    }));
  }

  bool begin_stream(int status, std::string_view content_type) override {
    responded_ = true;
    streaming_ = true;
    http::response<http::empty_body> response;
    response.version(version_);
    response.result(static_cast<unsigned>(status));
    response.set(http::field::content_type, content_type);
    response.set(http::field::cache_control, "no-cache");
    if (chunked())
      response.chunked(true);
    else
      keep_alive_ = false;  // HTTP/1.0: the body ends when the connection closes
    response.keep_alive(keep_alive_);
    http::response_serializer<http::empty_body> serializer{response};
    return done(link_.run(write_deadline(), [&serializer](tcp::socket& s, auto handler) {
      http::async_write_header(s, serializer, std::move(handler));
    }));
  }

  bool write(std::string_view data) override {
    if (!streaming_ || broken_) return false;
    if (data.empty()) return true;  // an empty chunk would end the body
    if (chunked()) return write_buffers(http::make_chunk(net::buffer(data.data(), data.size())));
    return write_buffers(net::buffer(data.data(), data.size()));
  }

  // Ends a streamed body (its last chunk); whether the connection can take another request.
  bool finish() {
    if (streaming_ && chunked() && !broken_) write_buffers(http::make_chunk_last());
    return keep_alive_ && !broken_;
  }

  bool peer_closed() const override {
    if (broken_) return true;
    // Only a connection that is gone both ways: a client that shut down its sending side after
    // its request (an end of input) still waits for the answer, as HTTP allows. One that closed
    // entirely shows here once a write drew its reset (a stream's next token), or when the
    // answer's write fails.
    pollfd p{link_.native_handle(), 0, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLHUP | POLLERR)) != 0;
  }

 private:
  bool chunked() const { return version_ >= 11; }
  Clock::time_point write_deadline() const {
    return Clock::now() + std::chrono::milliseconds(limits_.write_timeout_ms);
  }
  template <class Buffers>
  bool write_buffers(const Buffers& buffers) {
    return done(link_.run(write_deadline(), [&buffers](tcp::socket& s, auto handler) {
      net::async_write(s, buffers, std::move(handler));
    }));
  }
  bool done(beast::error_code ec) {
    if (ec) broken_ = true;
    return !broken_;
  }

  Link& link_;
  const HttpLimits& limits_;
  unsigned version_;
  bool keep_alive_;
  bool streaming_ = false;
  bool broken_ = false;
};

// Requests of one connection, one after another (keep-alive; pipelined requests wait in
// `buffer`), until the client or an answer ends it.
void serve_connection(Link& link, const HttpLimits& limits, const HttpHandler& handler,
                      const std::atomic<bool>& stop) {
  beast::flat_buffer buffer;
  for (bool idle = false;; idle = true) {
    RequestParser parser;
    apply_limits(parser, limits);
    // The whole request, headers and body, within read_timeout_ms: a per-read timeout would let
    // a client trickling one byte at a time hold its connection (and a slot) forever.
    const Clock::time_point deadline =
        Clock::now() + std::chrono::milliseconds(limits.read_timeout_ms);
    beast::error_code ec = link.run(
        deadline,
        [&](tcp::socket& s, auto done) {
          http::async_read_header(s, buffer, parser, std::move(done));
        },
        &stop);
    if (!ec && !parser.is_done()) {
      if (expects_continue(parser.get())) {
        http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
        ec = link.run(
            Clock::now() + std::chrono::milliseconds(limits.write_timeout_ms),
            [&go_on](tcp::socket& s, auto done) { http::async_write(s, go_on, std::move(done)); });
      }
      if (!ec)
        ec = link.run(
            deadline,
            [&](tcp::socket& s, auto done) {
              http::async_read(s, buffer, parser, std::move(done));
            },
            &stop);
    }
    std::optional<Refusal> refused;
    HttpRequest request;
    if (ec && stop.load()) return;  // the server is stopping: nobody is owed an answer
    if (ec) {
      refused = refusal(ec, parser, limits, idle);
      if (!refused) return;
    } else {
      try {
        request = to_request(parser.get());
      } catch (const Refusal& r) {
        refused = r;
      }
    }
    const unsigned version = parser.is_header_done() ? parser.get().version() : 11;
    if (refused) {
      BeastConnection conn(link, limits, version, /*keep_alive=*/false);
      conn.send(refused->status, "application/json",
                json_error_body(refused->status, refused->message, "invalid_request_error"));
      return;
    }
    BeastConnection conn(link, limits, version, parser.get().keep_alive());
    try {
      handler(request, conn);
      if (!conn.responded())
        conn.send(500, "application/json", json_error_body(500, "no response", "server_error"));
    } catch (const std::exception& e) {
      if (!conn.responded())
        conn.send(500, "application/json", json_error_body(500, e.what(), "server_error"));
    }
    if (!conn.finish()) return;
  }
}

}  // namespace

std::string json_error_body(int status, const std::string& message, const std::string& type) {
  const nlohmann::json body = {
      {"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HttpServer::HttpServer(const std::string& host, int port, HttpLimits limits, HttpHandler handler)
    : listener_(std::make_unique<Listener>()), limits_(limits), handler_(std::move(handler)) {
  const std::string service = std::to_string(port);
  beast::error_code ec;
  tcp::resolver resolver(listener_->io);
  const auto found =
      resolver.resolve(host, service, tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec) throw Error("serve: cannot resolve host \"" + host + "\": " + ec.message());
  tcp::acceptor& acceptor = listener_->acceptor;
  std::string why = "no address";
  for (const auto& entry : found) {
    acceptor.open(entry.endpoint().protocol(), ec);
    if (ec) continue;
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!acceptor.bind(entry.endpoint(), ec) && !acceptor.listen(128, ec)) break;
    why = ec.message();
    acceptor.close(ec);
  }
  if (!acceptor.is_open())
    throw Error("serve: cannot listen on " + host + ":" + service + ": " + why);
  close_on_exec(acceptor.native_handle());
  acceptor.non_blocking(true);  // accept() after poll() must not wait for a client that left
  port_ = acceptor.local_endpoint().port();
}

HttpServer::~HttpServer() = default;

void HttpServer::run(const std::atomic<bool>& stop) {
  tcp::acceptor& acceptor = listener_->acceptor;
  stop_ = &stop;
  while (!stop.load()) {
    pollfd p{acceptor.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    // Each connection gets its own context, driven by its own thread.
    auto io = std::make_unique<net::io_context>(1);
    tcp::socket socket(*io);
    beast::error_code ec;
    acceptor.accept(socket, ec);
    if (ec) continue;
    close_on_exec(socket.native_handle());
    if (open_.load() >= limits_.max_connections) {  // answered here, without a thread
      Link link(std::move(socket), *io);
      BeastConnection conn(link, limits_, 11, /*keep_alive=*/false);
      conn.send(503, "application/json",
                json_error_body(503,
                                "too many open connections (limit " +
                                    std::to_string(limits_.max_connections) + ", max_connections)",
                                "server_overloaded"));
      link.close_gracefully(std::chrono::milliseconds(20));  // briefly: this is the accept loop
      continue;
    }
    ++open_;
    std::thread([this, io = std::move(io), socket = std::move(socket)]() mutable {
      try {
        Link link(std::move(socket), *io);
        serve_connection(link, limits_, handler_, *stop_);
        link.close_gracefully();
      } catch (const std::exception&) {  // out of memory, say: this connection only
      }
      --open_;
    }).detach();
  }
}

void HttpServer::drain(int timeout_ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (open_.load() > 0 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

}  // namespace kivi::serve

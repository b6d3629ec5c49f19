// The HTTP/1.1 side of the server, on Boost.Beast: parsing (Content-Length and chunked request
// bodies), keep-alive and pipelining, 100-continue, header and body limits, a whole-request
// deadline (a client trickling bytes cannot hold a connection) and a deadline on every write (nor
// can one that stops reading). One thread per connection, bounded; streamed replies (server-sent
// events) go out as chunks while they are produced. It knows nothing of models: a handler gets
// the parsed request and answers through an HttpConnection.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace kivi::serve {

struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // the target without its query string
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

struct HttpLimits {
  size_t max_header_bytes = 16 * 1024;      // request line + headers
  size_t max_body_bytes = 8 * 1024 * 1024;  // 413 beyond
  int max_connections = 256;                // open at once; beyond, 503 at once
  int read_timeout_ms = 30000;   // a whole request (headers and body) must arrive within this
  int write_timeout_ms = 30000;  // each write; a client that stops reading is dropped
};

// The reply side of one request. Either send() once, or begin_stream() and write() pieces (the
// stream ends when the handler returns). Writes never raise SIGPIPE; a false return means the
// client is gone or stopped reading.
class HttpConnection {
 public:
  virtual ~HttpConnection() = default;
  virtual bool send(int status, std::string_view content_type, std::string_view body) = 0;
  virtual bool begin_stream(int status, std::string_view content_type) = 0;
  virtual bool write(std::string_view data) = 0;
  // Whether the client has gone (checked without blocking); a handler that waits a long time
  // (queued, or generating without streaming) polls this to cancel abandoned work. A client that
  // only shut down its sending side after its request has not gone: HTTP lets it wait.
  virtual bool peer_closed() const = 0;
  bool responded() const { return responded_; }

 protected:
  bool responded_ = false;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpConnection&)>;

// {"error": {"message": ..., "type": ..., "code": status}}: the OpenAI error shape, which the
// server itself uses for requests it cannot parse.
std::string json_error_body(int status, const std::string& message, const std::string& type);

class HttpServer {
 public:
  // Binds and listens (port 0: any free port; port() says which). Throws kivi::Error.
  HttpServer(const std::string& host, int port, HttpLimits limits, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // Accepts connections until `stop` becomes true (checked a few times a second); connections
  // waiting for a request (kept alive, or slow) then end within 200 ms.
  void run(const std::atomic<bool>& stop);
  // Waits up to `timeout_ms` for open connections to finish (call after run(), once their work
  // has been ended); connection threads use this object.
  void drain(int timeout_ms);
  int open_connections() const { return open_.load(); }

 private:
  struct Listener;  // the Asio acceptor and its context
  std::unique_ptr<Listener> listener_;
  int port_ = 0;
  HttpLimits limits_;
  HttpHandler handler_;
  std::atomic<int> open_{0};
  const std::atomic<bool>* stop_ = nullptr;  // run()'s: connections waiting to read end on it
};

}  // namespace kivi::serve

// A small HTTP/1.1 server over POSIX sockets, just enough for an OpenAI-style API: one thread per
// connection (bounded), one request per connection (every response says Connection: close, so
// there is no keep-alive state to get wrong), Content-Length bodies with a size limit, and
// streamed responses (server-sent events) written as they are produced. It knows nothing of
// models: a handler gets the parsed request and writes through an HttpConnection.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
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
  int read_timeout_ms = 30000;              // a client that sends nothing for this long is dropped
};

// The reply side of one connection. Either send() once, or begin_stream() and write() pieces.
// Writes never raise SIGPIPE; a false return means the client is gone.
class HttpConnection {
 public:
  explicit HttpConnection(int fd) : fd_(fd) {}
  bool send(int status, std::string_view content_type, std::string_view body);
  bool begin_stream(int status,
                    std::string_view content_type);  // no length: the body ends at close
  bool write(std::string_view data);
  // Whether the client has closed its side (checked without blocking); a handler that waits a
  // long time (queued, or generating without streaming) polls this to cancel abandoned work.
  bool peer_closed() const;
  bool responded() const { return responded_; }

 private:
  bool write_all(std::string_view data);
  int fd_;
  bool responded_ = false;
  bool broken_ = false;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpConnection&)>;

// {"error": {"message": ..., "type": ..., "code": status}}: the OpenAI error shape, which the
// server itself uses for requests it cannot parse.
std::string json_error_body(int status, const std::string& message, const std::string& type);
const char* status_text(int status);

class HttpServer {
 public:
  // Binds and listens (port 0: any free port; port() says which). Throws kivi::Error.
  HttpServer(const std::string& host, int port, HttpLimits limits, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // Accepts connections until `stop` becomes true (checked a few times a second).
  void run(const std::atomic<bool>& stop);
  // Waits up to `timeout_ms` for open connections to finish (call after run(), once their work
  // has been ended); connection threads use this object.
  void drain(int timeout_ms);
  int open_connections() const { return open_.load(); }

 private:
  void serve_connection(int fd);
  int listen_fd_ = -1;
  int port_ = 0;
  HttpLimits limits_;
  HttpHandler handler_;
  std::atomic<int> open_{0};
};

}  // namespace kivi::serve

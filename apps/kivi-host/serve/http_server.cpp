#include "serve/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "kivi/util/error.h"

namespace kivi::serve {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(std::string_view s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return std::string(s.substr(a, b - a));
}

// Why a request could not be read: the status to answer with (0 = just drop the connection).
struct BadRequest {
  int status;
  std::string message;
};

// A whole request must arrive within read_timeout_ms of its connection's start: a per-read
// timeout let a client trickling one byte at a time hold its connection (and a slot) forever.
class RequestDeadline {
 public:
  explicit RequestDeadline(int timeout_ms)
      : until_(std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms)) {}
  // Limits the next recv on fd to the time left; false when none is left.
  bool arm(int fd) const {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        until_ - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    timeval timeout{static_cast<time_t>(left.count() / 1000000),
                    static_cast<suseconds_t>(left.count() % 1000000)};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return true;
  }

 private:
  std::chrono::steady_clock::time_point until_;
};

// Reads until the end of the headers; `buffer` keeps whatever body bytes came with them.
std::string read_head(int fd, const HttpLimits& limits, const RequestDeadline& deadline,
                      std::string& buffer) {
  char chunk[8192];
  for (;;) {
    const size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos && end <= limits.max_header_bytes) {
      std::string head = buffer.substr(0, end);
      buffer.erase(0, end + 4);
      return head;
    }
    if (std::min(end, buffer.size()) > limits.max_header_bytes)
      throw BadRequest{
          431, "request headers larger than " + std::to_string(limits.max_header_bytes) + " bytes"};
    if (!deadline.arm(fd)) throw BadRequest{408, "request headers not received in time"};
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n == 0) throw BadRequest{0, "closed"};
    if (n < 0) {
      if (errno == EINTR) continue;
      throw BadRequest{errno == EAGAIN || errno == EWOULDBLOCK ? 408 : 0,
                       "request headers not received in time"};
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

HttpRequest parse_head(const std::string& head) {
  HttpRequest request;
  size_t line_end = head.find("\r\n");
  const std::string line = head.substr(0, line_end);
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1 || line.compare(sp2 + 1, 7, "HTTP/1.") != 0)
    throw BadRequest{400, "malformed request line"};
  request.method = line.substr(0, sp1);
  const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  request.path = target.substr(0, target.find('?'));
  if (request.path.empty() || request.path[0] != '/')
    throw BadRequest{400, "the request target must start with /"};
  while (line_end != std::string::npos) {
    const size_t start = line_end + 2;
    line_end = head.find("\r\n", start);
    const std::string header =
        head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
    if (header.empty()) continue;
    const size_t colon = header.find(':');
    if (colon == std::string::npos || colon == 0) throw BadRequest{400, "malformed header line"};
    const std::string name = lower(header.substr(0, colon));
    const std::string value = trim(std::string_view(header).substr(colon + 1));
    if (name == "content-length" && request.headers.count(name) && request.headers[name] != value)
      throw BadRequest{400, "conflicting Content-Length headers"};
    request.headers[name] = value;
  }
  return request;
}

void read_body(int fd, const HttpLimits& limits, const RequestDeadline& deadline,
               HttpRequest& request, std::string& buffer, HttpConnection& conn) {
  if (request.headers.count("transfer-encoding"))
    throw BadRequest{411, "chunked request bodies are not supported; send Content-Length"};
  size_t length = 0;
  if (auto it = request.headers.find("content-length"); it != request.headers.end()) {
    const std::string& v = it->second;
    if (v.empty() || v.size() > 15 ||
        !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
      throw BadRequest{400, "Content-Length is not a number: \"" + v + "\""};
    length = std::stoull(v);
  }
  if (length > limits.max_body_bytes)
    throw BadRequest{413, "request body of " + std::to_string(length) + " bytes; the limit is " +
                              std::to_string(limits.max_body_bytes)};
  if (auto it = request.headers.find("expect");
      it != request.headers.end() && lower(it->second) == "100-continue" && buffer.size() < length)
    conn.write("HTTP/1.1 100 Continue\r\n\r\n");
  char chunk[65536];
  while (buffer.size() < length) {
    if (!deadline.arm(fd)) throw BadRequest{408, "request body not received in time"};
    const ssize_t n = ::recv(fd, chunk, std::min(sizeof chunk, length - buffer.size()), 0);
    if (n == 0) throw BadRequest{0, "closed"};
    if (n < 0) {
      if (errno == EINTR) continue;
      throw BadRequest{errno == EAGAIN || errno == EWOULDBLOCK ? 408 : 0,
                       "request body not received in time"};
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
  request.body = buffer.substr(0, length);
}

// Ends our side, then reads (briefly, boundedly) what the client still sends: closing a socket
// with unread input makes the kernel send a reset, which can destroy the response in flight.
void linger_close(int fd) {
  ::shutdown(fd, SHUT_WR);
  timeval brief{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof brief);
  char sink[8192];
  for (size_t total = 0; total < 256 * 1024;) {
    const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
    if (n <= 0) break;
    total += static_cast<size_t>(n);
  }
}

}  // namespace

const char* status_text(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string json_error_body(int status, const std::string& message, const std::string& type) {
  const nlohmann::json body = {
      {"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool HttpConnection::write_all(std::string_view data) {
  while (!broken_ && !data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      broken_ = true;
    else
      data.remove_prefix(static_cast<size_t>(n));
  }
  return !broken_;
}

bool HttpConnection::write(std::string_view data) {
  return write_all(data);
}

bool HttpConnection::send(int status, std::string_view content_type, std::string_view body) {
  responded_ = true;
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
                     "\r\nContent-Type: " + std::string(content_type) +
                     "\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n";
  return write_all(head) && write_all(body);
}

bool HttpConnection::begin_stream(int status, std::string_view content_type) {
  responded_ = true;
  return write_all("HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
                   "\r\nContent-Type: " + std::string(content_type) +
                   "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n");
}

bool HttpConnection::peer_closed() const {
  if (broken_) return true;
  // Only a connection that is gone both ways: a client that shut down its sending side after its
  // request (an end of input, POLLRDHUP) still waits for the answer, as HTTP allows. One that
  // closed entirely shows here once a write drew its reset (a stream's next token), or when the
  // answer's write fails.
  pollfd p{fd_, 0, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLHUP | POLLERR)) != 0;
}

HttpServer::HttpServer(const std::string& host, int port, HttpLimits limits, HttpHandler handler)
    : limits_(limits), handler_(std::move(handler)) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    throw Error("serve: cannot resolve host \"" + host + "\": " + ::gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = found; a && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0) throw Error("serve: cannot listen on " + host + ":" + service + ": " + why);
  sockaddr_storage bound{};
  socklen_t size = sizeof bound;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &size);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

HttpServer::~HttpServer() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void HttpServer::run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (open_.load() >= limits_.max_connections) {  // answered here, without a thread
      HttpConnection conn(fd);
      conn.send(503, "application/json",
                json_error_body(503,
                                "too many open connections (limit " +
                                    std::to_string(limits_.max_connections) + ")",
                                "server_overloaded"));
      ::close(fd);
      continue;
    }
    ++open_;
    std::thread([this, fd] {
      serve_connection(fd);
      ::close(fd);
      --open_;
    }).detach();
  }
}

void HttpServer::drain(int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (open_.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void HttpServer::serve_connection(int fd) {
  const RequestDeadline deadline(limits_.read_timeout_ms);
  HttpConnection conn(fd);
  HttpRequest request;
  try {
    std::string buffer;
    request = parse_head(read_head(fd, limits_, deadline, buffer));
    read_body(fd, limits_, deadline, request, buffer, conn);
  } catch (const BadRequest& bad) {
    if (bad.status != 0) {
      conn.send(bad.status, "application/json",
                json_error_body(bad.status, bad.message, "invalid_request_error"));
      linger_close(fd);
    }
    return;
  }
  try {
    handler_(request, conn);
    if (!conn.responded())
      conn.send(500, "application/json", json_error_body(500, "no response", "server_error"));
  } catch (const std::exception& e) {
    if (!conn.responded())
      conn.send(500, "application/json", json_error_body(500, e.what(), "server_error"));
  }
  linger_close(fd);
}

}  // namespace kivi::serve

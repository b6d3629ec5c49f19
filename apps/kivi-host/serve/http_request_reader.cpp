#include "serve/http_request_reader.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <limits>

#include <boost/beast/http/error.hpp>

namespace kivi::serve {
namespace beast = boost::beast;
namespace http = beast::http;
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string trim(std::string_view s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return std::string(s.substr(a, b - a));
}

}  // namespace

void apply_limits(RequestParser& parser, const HttpLimits& limits) {
  parser.header_limit(static_cast<std::uint32_t>(
      std::min<size_t>(limits.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  parser.body_limit(limits.max_body_bytes);
}

std::optional<Refusal> refusal(beast::error_code ec, const RequestParser& parser,
                               const HttpLimits& limits, bool idle) {
  if (ec == beast::error::timeout) {
    if (idle && !parser.got_some()) return std::nullopt;
    return Refusal{408, std::string(parser.is_header_done() ? "the request body" : "the request") +
                            " did not arrive within " + std::to_string(limits.read_timeout_ms) +
                            " ms (read_timeout_ms)"};
  }
  if (ec == http::error::header_limit)
    return Refusal{
        431, "request headers larger than " + std::to_string(limits.max_header_bytes) + " bytes"};
  if (ec == http::error::body_limit) {
    const std::string limit = std::to_string(limits.max_body_bytes) + " bytes (max_body_bytes)";
    if (!parser.content_length()) return Refusal{413, "request body larger than " + limit};
    return Refusal{413, "request body of " + std::to_string(*parser.content_length()) +
                            " bytes; the limit is " + limit};
  }
  // The stream ended (before or inside a request): nobody to answer.
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return std::nullopt;
  if (ec.category() == http::make_error_code(http::error::bad_method).category())
    return Refusal{400, "malformed request: " + ec.message()};
  return std::nullopt;  // a socket error
}

HttpRequest to_request(const RequestMessage& message) {
  HttpRequest request;
  request.method = std::string(message.method_string());
  const std::string_view target = message.target();
  request.path = std::string(target.substr(0, target.find('?')));
  if (request.path.empty() || request.path[0] != '/')
    throw Refusal{400, "the request target must start with /"};
  for (const auto& field : message)
    request.headers[lower(field.name_string())] = trim(field.value());
  request.body = message.body();
  return request;
}

bool expects_continue(const RequestMessage& message) {
  const auto it = message.find(http::field::expect);
  return it != message.end() && lower(trim(it->value())) == "100-continue";
}

}  // namespace kivi::serve

// Arbitrary bytes as what a client sends on one connection, read as the server reads them
// (http_request_reader.h: Beast's parser under the server's limits, then the HttpRequest
// handlers see): the first byte picks the size of the pieces the bytes arrive in, so requests
// split anywhere (inside a header, a chunk size, a body) are tried; pipelined requests are read
// one after another, as keep-alive does. Every request is parsed or refused with a status and a
// message, which is then rendered as the JSON error body. Nothing may throw anything else.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>

#include "serve/http_request_reader.h"

namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  kivi::serve::HttpLimits limits;
  limits.max_header_bytes = 2048;  // small, so the fuzzer reaches them
  limits.max_body_bytes = 4096;
  boost::beast::flat_buffer buffer;
  size_t fed = 0;
  for (int request = 0; request < 16; ++request) {
    kivi::serve::RequestParser parser;
    kivi::serve::apply_limits(parser, limits);
    parser.eager(true);
    boost::beast::error_code ec;
    while (!parser.is_done()) {
      ec = {};
      const size_t used = buffer.size() ? parser.put(buffer.data(), ec) : 0;
      buffer.consume(used);
      if (ec && ec != http::error::need_more) break;
      if (parser.is_done()) break;
      if (used == 0 || buffer.size() == 0) {  // the parser waits for more
        if (fed == input.size()) {            // and the client is done sending
          ec = {};
          parser.put_eof(ec);
          if (!ec && !parser.is_done()) ec = http::error::partial_message;
          break;
        }
        const size_t n = std::min(piece, input.size() - fed);
        const auto to = buffer.prepare(n);
        std::copy_n(input.data() + fed, n, static_cast<char*>(to.data()));
        buffer.commit(n);
        fed += n;
      }
    }
    if (parser.is_done()) ec = {};
    std::optional<kivi::serve::Refusal> refused;
    if (ec) {
      refused = kivi::serve::refusal(ec, parser, limits, request > 0);
      if (!refused) return 0;  // the connection would just close
    } else {
      try {
        const kivi::serve::HttpRequest r = kivi::serve::to_request(parser.get());
        (void)kivi::serve::expects_continue(parser.get());
        if (r.path.empty() || r.path[0] != '/') __builtin_trap();
        if (r.body.size() > limits.max_body_bytes) __builtin_trap();
      } catch (const kivi::serve::Refusal& r) {
        refused = r;
      }
    }
    if (refused) {
      if (refused->status < 400 || refused->status > 599) __builtin_trap();
      (void)kivi::serve::json_error_body(refused->status, refused->message,
                                         "invalid_request_error");
      return 0;  // a refused request ends its connection
    }
    if (!parser.get().keep_alive()) return 0;
  }
  return 0;
}

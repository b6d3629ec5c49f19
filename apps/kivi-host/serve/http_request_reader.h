// One HTTP request as the server reads it: Beast's parser under HttpLimits, the parsed message
// turned into an HttpRequest, and what to answer a request that cannot be read. Shared by the
// server (http_server.cpp) and the fuzz harness (tests/fuzz/fuzz_http.cpp), which feeds it
// arbitrary bytes in arbitrary pieces.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "serve/http_server.h"

namespace kivi::serve {

using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;
using RequestMessage = boost::beast::http::request<boost::beast::http::string_body>;

// Why a request could not be read, as the status to answer with and its message.
struct Refusal {
  int status;
  std::string message;
};

// Header and body limits from `limits` (Beast's defaults are smaller).
void apply_limits(RequestParser& parser, const HttpLimits& limits);

// What to answer a read that failed with `ec` (beast::error::timeout when the deadline passed);
// nothing when the connection is simply gone, or was kept alive (`idle`) and sent nothing more.
std::optional<Refusal> refusal(boost::beast::error_code ec, const RequestParser& parser,
                               const HttpLimits& limits, bool idle);

// The parsed message as handlers see it; a target that is not a path throws a Refusal.
HttpRequest to_request(const RequestMessage& message);

bool expects_continue(const RequestMessage& message);

}  // namespace kivi::serve

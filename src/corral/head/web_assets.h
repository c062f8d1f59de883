// The dashboard's page, script and styles (web/), built into the head by cmake/embed_web.cmake.
#pragma once

#include <string_view>

namespace corral::head::web {

extern const std::string_view kIndexHtml;
extern const std::string_view kAppJs;
extern const std::string_view kAppCss;
extern const std::string_view kFaviconSvg;

}  // namespace corral::head::web

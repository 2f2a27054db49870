//! The security headers every Brewlytics HTTP server sends — the API, the dashboard and the
//! replicator's status page — on every response, whatever its status:
//!
//! - `Content-Security-Policy`: scripts, styles and fetches from the server itself only (no
//!   inline script or style, no `eval`), nothing from elsewhere, and `frame-ancestors 'none'`
//!   so no other site can frame the pages;
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and
//!   `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`.
//!
//! A handler that sets one of these headers itself keeps its own value.

use axum::http::header::{
    HeaderName, HeaderValue, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::Response;

/// For servers with pages: their own scripts, styles, images and fetches; nothing inline.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// For servers of JSON only: nothing may run or load from a response.
pub const API_POLICY: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Adds the headers to `response` (keeping any the handler set), with `policy` as the CSP.
pub fn add_security_headers(policy: &'static str, response: &mut Response) {
    let headers = response.headers_mut();
    let pairs: [(HeaderName, &'static str); 4] = [
        (CONTENT_SECURITY_POLICY, policy),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in pairs {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

/// A layer adding the headers to every response of a router:
/// `router.layer(security_headers(PAGE_POLICY))`.
pub fn security_headers(
    policy: &'static str,
) -> axum::middleware::MapResponseLayer<
    impl FnMut(Response) -> std::future::Ready<Response> + Clone + Send + Sync + 'static,
    (),
    (),
> {
    axum::middleware::map_response(move |mut response: Response| {
        add_security_headers(policy, &mut response);
        std::future::ready(response)
    })
}

/// `text` percent-encoded: RFC 3986's unreserved characters kept, every other byte `%XX` (for
/// a URL's user or password part, or a query parameter's value).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_characters_only() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("/?a=1&b=é"), "%2F%3Fa%3D1%26b%3D%C3%A9");
    }

    #[test]
    fn headers_are_added_and_a_handlers_own_kept() {
        let mut r = Response::new(axum::body::Body::empty());
        r.headers_mut()
            .insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        add_security_headers(PAGE_POLICY, &mut r);
        let h = r.headers();
        assert_eq!(h[CONTENT_SECURITY_POLICY], PAGE_POLICY);
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[REFERRER_POLICY], "same-origin");
        for policy in [PAGE_POLICY, API_POLICY] {
            assert!(policy.contains("frame-ancestors 'none'"));
            assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
        }
    }
}

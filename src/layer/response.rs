//! The headers a response gets from its session: `Set-Cookie`, `Cache-Control` and `Vary`.

use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue};

use crate::session::{Outcome, Session};

/// Adds the session's headers to a response: `Set-Cookie` as `outcome` says, the caching
/// headers that keep it from other visitors, and `Vary: Cookie` (the session was used).
pub(super) fn apply(headers: &mut HeaderMap, session: &Session, outcome: Outcome) {
    let cookie = match outcome {
        Outcome::Keep => None,
        Outcome::Set(cookie) => Some(cookie),
        Outcome::Remove => Some(session.removal_cookie()),
    };
    if let Some(cookie) = cookie {
        headers.append(SET_COOKIE, cookie);
        keep_from_shared_caches(headers);
    }
    vary(headers);
}

/// A response that sets a cookie must never be handed to another visitor by a cache:
/// `no-store` when it has no `Cache-Control` of its own; when its own lets a shared cache keep
/// it (anything but `no-store` or `private`), `no-cache="Set-Cookie"` is added, so that the
/// cookie is never served from a cache.
fn keep_from_shared_caches(headers: &mut HeaderMap) {
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return;
    }
    let mut directives = Vec::new();
    for value in headers.get_all(CACHE_CONTROL) {
        // A value that is not text cannot be read, so it cannot be trusted to protect the
        // cookie either: it is kept, and the directive added.
        if let Ok(text) = value.to_str() {
            directives.extend(text.split(',').map(|d| d.trim().to_ascii_lowercase()));
        }
    }
    let unshared = directives.iter().any(|directive| {
        let name = directive.split('=').next().unwrap_or_default().trim();
        // A qualified `private="…"` still lets a shared cache keep the rest.
        (name == "no-store") || (name == "private" && !directive.contains('='))
    });
    let covered = directives
        .iter()
        .any(|directive| directive.replace(' ', "") == "no-cache=\"set-cookie\"");
    if !unshared && !covered {
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache=\"Set-Cookie\""),
        );
    }
}

/// `Vary: Cookie`, unless the response already varies by it.
pub(super) fn vary(headers: &mut HeaderMap) {
    let varies = headers.get_all(VARY).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|field| {
            let field = field.trim_ascii();
            field == b"*" || field.eq_ignore_ascii_case(b"cookie")
        })
    });
    if !varies {
        headers.append(VARY, HeaderValue::from_static("cookie"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_control(own: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for value in own {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        }
        keep_from_shared_caches(&mut headers);
        headers
            .get_all(CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn r13_a_cookie_is_kept_from_shared_caches() {
        assert_eq!(cache_control(&[]), ["no-store"]);
        for unshared in [
            "private, max-age=60",
            "no-store",
            "No-Store",
            "max-age=0, private",
        ] {
            assert_eq!(cache_control(&[unshared]), [unshared]);
        }
        for shared in [
            "public, max-age=60",
            "s-maxage=300",
            "max-age=60",
            "no-cache",
            "private=\"x\"",
        ] {
            assert_eq!(
                cache_control(&[shared]),
                [shared, "no-cache=\"Set-Cookie\""],
                "{shared}"
            );
        }
        assert_eq!(
            cache_control(&["public", "no-cache=\"Set-Cookie\""]),
            ["public", "no-cache=\"Set-Cookie\""]
        );
    }

    #[test]
    fn r13_vary_names_cookie_once() {
        for (own, want) in [
            (vec![], vec!["cookie"]),
            (vec!["Accept-Encoding"], vec!["Accept-Encoding", "cookie"]),
            (
                vec!["Accept-Encoding, Cookie"],
                vec!["Accept-Encoding, Cookie"],
            ),
            (vec!["*"], vec!["*"]),
        ] {
            let mut headers = HeaderMap::new();
            for value in &own {
                headers.append(VARY, HeaderValue::from_str(value).unwrap());
            }
            vary(&mut headers);
            let got: Vec<_> = headers
                .get_all(VARY)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, want);
        }
    }
}

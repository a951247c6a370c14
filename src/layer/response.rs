//! The headers a response gets from its session: `Set-Cookie` and the session header,
//! `Cache-Control` and `Vary`.

use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue};

use crate::engine::SessionEngine;
use crate::session::{Outcome, Session};

/// Adds the session's headers to a response: the signed id (in `Set-Cookie` and the session
/// header, as the engine carries it) or its removal, as `outcome` says; the caching headers that
/// keep it from other visitors; and `Vary` (the session was used).
pub(super) fn apply(headers: &mut HeaderMap, session: &Session, outcome: Outcome) {
    let engine = session.engine();
    let sent = match outcome {
        Outcome::Keep => false,
        Outcome::Set(issue) => {
            if engine.sends_cookie() {
                headers.append(
                    SET_COOKIE,
                    engine.cookie().set(issue.value(), issue.max_age()),
                );
            }
            if let Some(name) = engine.header() {
                // A signed value is base64 and id characters.
                let value = HeaderValue::from_str(issue.value())
                    .expect("a signed id is a valid header value");
                headers.insert(name.clone(), value);
            }
            true
        }
        Outcome::Remove => {
            if engine.sends_cookie() {
                headers.append(SET_COOKIE, engine.cookie().removal());
            }
            if let Some(name) = engine.header() {
                headers.insert(name.clone(), HeaderValue::from_static(""));
            }
            true
        }
    };
    if sent {
        // The fields that carry the signed id: `Set-Cookie`, the session header, or both.
        let cookie = engine.sends_cookie().then_some("Set-Cookie");
        let header = engine.header().map(http::HeaderName::as_str);
        keep_from_shared_caches(headers, &[cookie, header]);
    }
    vary(headers, engine);
}

/// A response that carries the signed id must never be handed to another visitor by a cache:
/// `no-store` when it has no `Cache-Control` of its own; when its own lets a shared cache keep
/// it (anything but `no-store` or `private`), `no-cache="FIELD"` is added for each field that
/// carries the id (`Set-Cookie`, the session header), so that the id is never served from a
/// cache.
///
/// Hand-written, not the `headers` crate's `CacheControl`: that one drops a directive with a
/// field list (`no-cache="Set-Cookie"`, so ours would be added twice), matches names case
/// sensitively (`No-Store` would be missed) and refuses a whole header for one malformed
/// value (its `no-store` with it).
fn keep_from_shared_caches(headers: &mut HeaderMap, fields: &[Option<&str>]) {
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
    if unshared {
        return;
    }
    for field in fields.iter().flatten() {
        let directive = format!("no-cache=\"{field}\"");
        let covered = directives
            .iter()
            .any(|own| own.replace(' ', "") == directive.to_ascii_lowercase());
        if !covered {
            // Field names are tokens: the directive is a valid header value.
            let value = HeaderValue::try_from(directive).expect("a token in quotes");
            headers.append(CACHE_CONTROL, value);
        }
    }
}

/// `Vary: Cookie` when the engine reads the cookie, and `Vary: NAME` when it reads the session
/// header, unless the response already varies by them.
pub(super) fn vary(headers: &mut HeaderMap, engine: &SessionEngine) {
    if engine.sends_cookie() {
        vary_by(headers, "cookie", || HeaderValue::from_static("cookie"));
    }
    if let Some(name) = engine.header() {
        vary_by(headers, name.as_str(), || HeaderValue::from(name.clone()));
    }
}

/// Adds `Vary: FIELD` (the value `value` makes) unless the response varies by it already.
fn vary_by(headers: &mut HeaderMap, field_name: &str, value: impl FnOnce() -> HeaderValue) {
    let varies = headers.get_all(VARY).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|field| {
            let field = field.trim_ascii();
            field == b"*" || field.eq_ignore_ascii_case(field_name.as_bytes())
        })
    });
    if !varies {
        headers.append(VARY, value());
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
        keep_from_shared_caches(&mut headers, &[Some("Set-Cookie")]);
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
            vary_by(&mut headers, "cookie", || {
                HeaderValue::from_static("cookie")
            });
            let got: Vec<_> = headers
                .get_all(VARY)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, want);
        }
    }
}

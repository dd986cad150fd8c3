//! One listener's routes: which link a request goes to, by `Host` and longest path prefix.
//!
//! A route is (host or any, path prefix). A request picks, among the routes for its host
//! name, the one with the longest prefix that matches at a segment boundary (`/api` matches
//! `/api` and `/api/x`, not `/apix`); if none does, the same among the host-less routes.
//! Two links may not claim the same (host, prefix) on one listener: the second is refused.

use std::sync::Arc;

use trellis_sdk::link::LinkKey;

/// A route of one listener.
#[derive(Debug)]
pub struct Route<T> {
    /// The link that put it.
    pub link: LinkKey,
    /// Host name (lower case, no port), or any.
    pub host: Option<String>,
    /// Path prefix (normalised).
    pub prefix: String,
    /// What requests on it reach.
    pub target: Arc<T>,
}

/// A listener's routes. Small (a handful of links), so a vector scanned per request beats
/// a trie in both code and speed.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> Clone for Route<T> {
    fn clone(&self) -> Self {
        Self {
            link: self.link.clone(),
            host: self.host.clone(),
            prefix: self.prefix.clone(),
            target: Arc::clone(&self.target),
        }
    }
}

impl<T> Clone for RouteTable<T> {
    fn clone(&self) -> Self {
        Self {
            routes: self.routes.clone(),
        }
    }
}

/// `prefix` covers `path` at a segment boundary.
fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

impl<T> RouteTable<T> {
    /// Adds `route`, unless another link holds the same host and prefix (its key returned).
    pub fn insert(&mut self, route: Route<T>) -> Result<(), Box<LinkKey>> {
        if let Some(taken) = self
            .routes
            .iter()
            .find(|r| r.host == route.host && r.prefix == route.prefix && r.link != route.link)
        {
            return Err(Box::new(taken.link.clone()));
        }
        self.routes.retain(|r| r.link != route.link);
        self.routes.push(route);
        Ok(())
    }

    /// Removes the route of `link`; returns whether there was one.
    pub fn remove(&mut self, link: &LinkKey) -> bool {
        let before = self.routes.len();
        self.routes.retain(|r| &r.link != link);
        before != self.routes.len()
    }

    /// No routes left.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for a request to `host` (lower case, no port) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route<T>> {
        let best = |want_host: Option<&str>| {
            self.routes
                .iter()
                .filter(|r| r.host.as_deref() == want_host && covers(&r.prefix, path))
                .max_by_key(|r| r.prefix.len())
        };
        host.and_then(|h| best(Some(h))).or_else(|| best(None))
    }
}

/// The host name of a `Host` header or URI authority: lower case, port and trailing dot
/// dropped; IPv6 literals keep their brackets.
pub fn host_name(authority: &str) -> String {
    let without_port = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> LinkKey {
        LinkKey {
            source_id: "http".into(),
            target: n.into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "http".into(),
            interfaces: vec!["incoming-handler".into()],
        }
    }

    fn route(n: &str, host: Option<&str>, prefix: &str) -> Route<String> {
        Route {
            link: key(n),
            host: host.map(String::from),
            prefix: prefix.into(),
            target: Arc::new(n.to_string()),
        }
    }

    fn target(t: &RouteTable<String>, host: Option<&str>, path: &str) -> Option<String> {
        t.find(host, path).map(|r| (*r.target).clone())
    }

    #[test]
    fn longest_prefix_at_segment_boundaries() {
        let mut t = RouteTable::default();
        t.insert(route("root", None, "/")).unwrap();
        t.insert(route("api", None, "/api")).unwrap();
        t.insert(route("v2", None, "/api/v2")).unwrap();
        assert_eq!(target(&t, None, "/").as_deref(), Some("root"));
        assert_eq!(target(&t, None, "/api").as_deref(), Some("api"));
        assert_eq!(target(&t, None, "/api/v1/x").as_deref(), Some("api"));
        assert_eq!(target(&t, None, "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(target(&t, None, "/apix").as_deref(), Some("root"));
        assert!(t.remove(&key("root")));
        assert_eq!(target(&t, None, "/apix"), None);
    }

    #[test]
    fn host_routes_first_then_any() {
        let mut t = RouteTable::default();
        t.insert(route("a", Some("a.test"), "/")).unwrap();
        t.insert(route("any", None, "/")).unwrap();
        assert_eq!(target(&t, Some("a.test"), "/x").as_deref(), Some("a"));
        assert_eq!(target(&t, Some("b.test"), "/x").as_deref(), Some("any"));
        assert_eq!(target(&t, None, "/x").as_deref(), Some("any"));
    }

    #[test]
    fn duplicates_are_refused_but_a_link_may_move() {
        let mut t = RouteTable::default();
        t.insert(route("a", None, "/api")).unwrap();
        assert_eq!(*t.insert(route("b", None, "/api")).unwrap_err(), key("a"));
        t.insert(route("a", None, "/other")).unwrap();
        t.insert(route("b", None, "/api")).unwrap();
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("Example.com:8080"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("localhost"), "localhost");
    }
}

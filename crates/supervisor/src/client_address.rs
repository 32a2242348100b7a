//! The client's address for throttling and the audit log: the socket's peer, or, when the peer
//! is a trusted reverse proxy (`--trusted-proxy`), the address it forwards in
//! `X-Forwarded-For`. The header is read from the right: each trusted proxy appends the address
//! it saw, so the rightmost address that is not a trusted proxy is the client (an address the
//! client itself wrote on the left is never believed). Upstream believes the header's leftmost
//! entry from anyone.

use std::net::IpAddr;

use actix_web::HttpRequest;

pub fn of(req: &HttpRequest, trusted: &[IpAddr]) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return String::new();
    };
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    resolve(peer, &forwarded, trusted).to_string()
}

/// The client behind `peer`, given the `X-Forwarded-For` value and the trusted proxies.
pub fn resolve(peer: IpAddr, forwarded: &str, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A malformed entry ends what can be believed.
            return client;
        };
        client = ip;
        if !trusted.contains(&ip) {
            return ip;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_proxies_are_believed_from_the_right() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy, ip("10.0.0.2")];
        // Not a trusted peer: the header is ignored.
        assert_eq!(
            resolve(ip("203.0.113.9"), "1.2.3.4", &trusted),
            ip("203.0.113.9")
        );
        // Through one proxy.
        assert_eq!(resolve(proxy, "198.51.100.7", &trusted), ip("198.51.100.7"));
        // A client forging the header's left part is not believed.
        assert_eq!(
            resolve(proxy, "6.6.6.6, 198.51.100.7", &trusted),
            ip("198.51.100.7")
        );
        // Two proxies.
        assert_eq!(
            resolve(proxy, "198.51.100.7, 10.0.0.2", &trusted),
            ip("198.51.100.7")
        );
        // Garbage stops the walk at what was believed so far.
        assert_eq!(resolve(proxy, "198.51.100.7, junk", &trusted), proxy);
        assert_eq!(resolve(proxy, "", &trusted), proxy);
        // No proxy trusted: never the header.
        assert_eq!(resolve(proxy, "198.51.100.7", &[]), proxy);
    }
}

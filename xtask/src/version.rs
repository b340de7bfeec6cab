//! Dotted versions (glibc 2.17, GLIBCXX 3.4.29, OPENSSL 3.0.0), ordered
//! numerically: the targets' glibc ceilings, the health check's symbol
//! versions and the zig builder's glibc all compare them.

use std::fmt;

/// A symbol version such as 2.17 or 3.4.29.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub Vec<u32>);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let parts: Option<Vec<u32>> = s.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty()).map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

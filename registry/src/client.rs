//! The distribution API client: requests with auth (anonymous, Basic, Bearer tokens from the
//! WWW-Authenticate challenge), manual redirects that never carry credentials to another host,
//! retries with backoff for idempotent requests, and size caps on everything read whole.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use strata_image::spec::{media, MAX_JSON_BYTES};
use strata_image::Digest;

use crate::auth::{self, Challenge, Credentials};
use crate::RegistryError;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries reached over plain HTTP besides localhost.
    pub insecure: Vec<String>,
    pub timeout: Duration,
    /// Blobs larger than this are uploaded in chunks of this size.
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: Vec::new(),
            timeout: Duration::from_secs(60),
            chunk_size: 64 << 20,
        }
    }
}

/// A request body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + 'a>, u64),
}

/// A client for one registry.
pub struct Client {
    pub domain: String,
    base: String,
    host: String,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    tokens: Mutex<HashMap<String, String>>,
    basic: Mutex<bool>,
    pub opts: ClientOptions,
}

/// Accept header for manifests.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

const MAX_REDIRECTS: usize = 5;

/// Plain HTTP is used only for loopback registries and those named insecure.
pub fn is_insecure(domain: &str, extra: &[String]) -> bool {
    let host = domain
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                domain
            }
        })
        .unwrap_or(domain);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || extra.iter().any(|e| e == domain)
}

impl Client {
    /// A client for the registry of `domain` (as in a reference: `docker.io`, `localhost:5000`).
    pub fn new(domain: &str, opts: ClientOptions) -> Client {
        let host = if domain == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            domain.to_string()
        };
        let scheme = if is_insecure(domain, &opts.insecure) {
            "http"
        } else {
            "https"
        };
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(opts.timeout)
            .timeout_write(opts.timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .tls_connector(std::sync::Arc::new(crate::tls::SystemRoots))
            .build();
        Client {
            domain: domain.to_string(),
            base: format!("{scheme}://{host}"),
            creds: auth::lookup(domain).or_else(|| auth::lookup(&host)),
            host,
            agent,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
            opts,
        }
    }

    /// Uses these credentials instead of the saved ones (login).
    pub fn with_credentials(mut self, c: Credentials) -> Client {
        self.creds = Some(c);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        if let Some(t) = self.tokens.lock().expect("tokens").get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if *self.basic.lock().expect("basic") {
            if let Some(c) = &self.creds {
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password));
                return Some(format!("Basic {enc}"));
            }
        }
        None
    }

    /// Answers a 401 challenge; false if there is nothing new to try.
    /// `had_auth`: the failed request carried credentials already (so Basic has nothing new
    /// to offer; a Bearer token is fetched afresh, it may have expired).
    fn authenticate(
        &self,
        challenge: Option<&str>,
        scope: &str,
        had_auth: bool,
    ) -> Result<bool, RegistryError> {
        match challenge.and_then(auth::parse_challenge) {
            Some(Challenge::Basic) => {
                if self.creds.is_none() {
                    return Err(RegistryError::Auth(format!(
                        "{}: authentication required (strata login {})",
                        self.domain, self.domain
                    )));
                }
                let mut b = self.basic.lock().expect("basic");
                if *b && had_auth {
                    return Ok(false);
                }
                *b = true;
                Ok(true)
            }
            Some(Challenge::Bearer { realm, params }) => {
                let mut url = url::Url::parse(&realm).map_err(|e| {
                    RegistryError::Protocol(format!(
                        "{}: bad token realm {realm:?}: {e}",
                        self.domain
                    ))
                })?;
                if !matches!(url.scheme(), "https" | "http") {
                    return Err(RegistryError::Protocol(format!(
                        "{}: token realm {realm:?} is not http(s)",
                        self.domain
                    )));
                }
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    if !scope.is_empty() {
                        for s in scope.split(' ') {
                            q.append_pair("scope", s);
                        }
                    }
                }
                let mut req = self.agent.get(url.as_str());
                if let Some(c) = &self.creds {
                    let enc = base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.username, c.password));
                    req = req.set("Authorization", &format!("Basic {enc}"));
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(code, _)) => {
                        return Err(RegistryError::Auth(format!(
                            "{}: the token server answered {code}",
                            self.domain
                        )))
                    }
                    Err(e) => {
                        return Err(RegistryError::Transport(format!(
                            "{}: token request: {e}",
                            self.domain
                        )))
                    }
                };
                let body = read_capped(resp.into_reader(), 1 << 20, "token response")?;
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    RegistryError::Protocol(format!("{}: token response: {e}", self.domain))
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| {
                        RegistryError::Protocol(format!(
                            "{}: token response has no token",
                            self.domain
                        ))
                    })?;
                self.tokens
                    .lock()
                    .expect("tokens")
                    .insert(scope.to_string(), token.to_string());
                Ok(true)
            }
            None => Err(RegistryError::Auth(format!(
                "{}: unauthorized",
                self.domain
            ))),
        }
    }

    /// Sends a request, answering auth challenges, following redirects (without credentials
    /// when they leave this host) and retrying idempotent requests. Non-2xx statuses come back
    /// as responses for the caller to judge.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        scope: &str,
    ) -> Result<ureq::Response, RegistryError> {
        let idempotent = matches!(method, "GET" | "HEAD");
        let mut body = Some(body);
        let mut url = url.to_string();
        let mut redirects = 0;
        let mut auth_tries = 0;
        let mut attempt = 0;
        loop {
            let same_host = url::Url::parse(&url)
                .map(|u| u.host_str() == Some(self.host.split(':').next().unwrap_or("")))
                .unwrap_or(false);
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let sent_auth = if same_host {
                self.auth_header(scope)
            } else {
                None
            };
            if let Some(a) = &sent_auth {
                req = req.set("Authorization", a);
            }
            let b = match &body {
                Some(Body::Reader(..)) => body.take().expect("present"),
                Some(Body::Bytes(x)) => Body::Bytes(x),
                Some(Body::Empty) | None => Body::Empty,
            };
            let result = match b {
                Body::Empty => req.call(),
                Body::Bytes(x) => req.send_bytes(x),
                Body::Reader(r, len) => req.set("Content-Length", &len.to_string()).send(r),
            };
            let resp = match result {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    if idempotent && attempt < 2 {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(200 << attempt));
                        continue;
                    }
                    let detail = transport_detail(&t);
                    return Err(RegistryError::Transport(format!(
                        "{method} {url}: {}",
                        detail.to_lowercase()
                    )));
                }
            };
            let status = resp.status();
            if status == 401 && auth_tries < 2 && same_host {
                let challenge = resp.header("WWW-Authenticate").map(str::to_string);
                // Another thread may have fetched a token while this request was in flight.
                let current = self.auth_header(scope);
                let refreshed = current.is_some() && current != sent_auth;
                let can_resend =
                    idempotent || body.is_some() || matches!(method, "POST" | "DELETE");
                if can_resend
                    && (refreshed
                        || self.authenticate(challenge.as_deref(), scope, sent_auth.is_some())?)
                {
                    auth_tries += 1;
                    continue;
                }
                return Err(RegistryError::Auth(format!("{method} {url}: unauthorized")));
            }
            if (300..400).contains(&status) && status != 304 {
                let Some(loc) = resp.header("Location").map(str::to_string) else {
                    return Ok(resp);
                };
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(RegistryError::Protocol(format!(
                        "{method} {url}: more than {MAX_REDIRECTS} redirects"
                    )));
                }
                url = url::Url::parse(&url)
                    .and_then(|base| base.join(&loc))
                    .map_err(|e| {
                        RegistryError::Protocol(format!(
                            "{method} {url}: bad redirect {loc:?}: {e}"
                        ))
                    })?
                    .to_string();
                continue;
            }
            if status >= 500 && idempotent && attempt < 2 {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200 << attempt));
                continue;
            }
            return Ok(resp);
        }
    }

    /// `GET /v2/` with auth: checks credentials (login).
    pub fn ping(&self) -> Result<(), RegistryError> {
        let resp = self.send("GET", &self.url("/v2/"), &[], Body::Empty, "")?;
        match resp.status() {
            200 => Ok(()),
            code => Err(RegistryError::Status(format!(
                "{}: /v2/ answered {code}",
                self.domain
            ))),
        }
    }

    /// Fetches a manifest or index: (bytes, media type, digest). The digest is verified
    /// against a digest reference and the Docker-Content-Digest header; the size is capped;
    /// a body whose `mediaType` disagrees with its Content-Type is refused.
    pub fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let scope = format!("repository:{repo}:pull");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self.send(
            "GET",
            &url,
            &[("Accept", MANIFEST_ACCEPT)],
            Body::Empty,
            &scope,
        )?;
        match resp.status() {
            200 => {}
            404 => {
                return Err(RegistryError::NotFound(format!(
                    "{}/{repo}:{reference}: manifest unknown",
                    self.domain
                )))
            }
            code => return Err(status_error(resp, code, &url)),
        }
        let content_type = resp
            .header("Content-Type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let header_digest = resp.header("Docker-Content-Digest").map(str::to_string);
        let bytes = read_capped(
            resp.into_reader(),
            MAX_JSON_BYTES,
            &format!("manifest {repo}:{reference}"),
        )?;
        let digest = Digest::of(&bytes);
        if let Ok(d) = Digest::parse(reference) {
            if d != digest {
                return Err(RegistryError::Integrity(format!(
                    "manifest {repo}@{reference}: content hashes to {digest}"
                )));
            }
        }
        if let Some(h) = header_digest {
            if h != digest.as_str() {
                return Err(RegistryError::Integrity(format!("manifest {repo}:{reference}: Docker-Content-Digest {h} but content hashes to {digest}")));
            }
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Protocol(format!("manifest {repo}:{reference}: {e}")))?;
        let body_type = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let media_type = match (&body_type, content_type.as_str()) {
            (Some(b), ct)
                if !ct.is_empty() && b != ct && (media::is_manifest(ct) || media::is_index(ct)) =>
            {
                return Err(RegistryError::Protocol(format!(
                    "manifest {repo}:{reference}: Content-Type {ct} disagrees with mediaType {b}"
                )));
            }
            (Some(b), _) => b.clone(),
            (None, ct) if media::is_manifest(ct) || media::is_index(ct) => ct.to_string(),
            (None, _) if v.get("manifests").is_some() => media::OCI_INDEX.to_string(),
            (None, _) => media::OCI_MANIFEST.to_string(),
        };
        if !media::is_manifest(&media_type) && !media::is_index(&media_type) {
            return Err(RegistryError::Protocol(format!(
                "manifest {repo}:{reference}: unsupported media type {media_type:?}"
            )));
        }
        Ok((bytes, media_type, digest))
    }

    /// A blob's body (the caller verifies digest and size while reading).
    pub fn blob(&self, repo: &str, digest: &Digest) -> Result<Box<dyn Read + Send>, RegistryError> {
        let scope = format!("repository:{repo}:pull");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self.send("GET", &url, &[], Body::Empty, &scope)?;
        match resp.status() {
            200 => Ok(resp.into_reader()),
            404 => Err(RegistryError::NotFound(format!(
                "blob {digest} not found in {}/{repo}",
                self.domain
            ))),
            code => Err(status_error(resp, code, &url)),
        }
    }

    pub fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let scope = format!("repository:{repo}:pull,push");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self.send("HEAD", &url, &[], Body::Empty, &scope)?;
        Ok(resp.status() == 200)
    }

    /// Tries a cross-repository mount; true if the registry mounted the blob.
    pub fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
        let url = self.url(&format!(
            "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
        ));
        let resp = self.send(
            "POST",
            &url,
            &[("Content-Length", "0")],
            Body::Empty,
            &scope,
        )?;
        Ok(resp.status() == 201)
    }

    /// Uploads a blob of `size` bytes: one PUT, or PATCH chunks then PUT for large blobs.
    pub fn upload_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        mut data: Box<dyn Read + '_>,
    ) -> Result<(), RegistryError> {
        let scope = format!("repository:{repo}:pull,push");
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self.send(
            "POST",
            &start,
            &[("Content-Length", "0")],
            Body::Empty,
            &scope,
        )?;
        if resp.status() != 202 {
            let code = resp.status();
            return Err(status_error(resp, code, &start));
        }
        let mut location = self.location(&resp, &start)?;
        if size > self.opts.chunk_size {
            let mut offset = 0u64;
            while offset < size {
                let n = (size - offset).min(self.opts.chunk_size);
                let range = format!("{}-{}", offset, offset + n - 1);
                let chunk = Box::new((&mut data).take(n));
                let resp = self.send(
                    "PATCH",
                    &location,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Content-Range", &range),
                    ],
                    Body::Reader(chunk, n),
                    &scope,
                )?;
                if resp.status() != 202 {
                    let code = resp.status();
                    return Err(status_error(resp, code, &location));
                }
                location = self.location(&resp, &location)?;
                offset += n;
            }
            let put = with_query(&location, "digest", digest.as_str());
            let resp = self.send("PUT", &put, &[("Content-Length", "0")], Body::Empty, &scope)?;
            if resp.status() != 201 {
                let code = resp.status();
                return Err(status_error(resp, code, &put));
            }
            return Ok(());
        }
        let put = with_query(&location, "digest", digest.as_str());
        let resp = self.send(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Body::Reader(data, size),
            &scope,
        )?;
        if resp.status() != 201 {
            let code = resp.status();
            return Err(status_error(resp, code, &put));
        }
        Ok(())
    }

    fn location(&self, resp: &ureq::Response, base: &str) -> Result<String, RegistryError> {
        let loc = resp.header("Location").ok_or_else(|| {
            RegistryError::Protocol(format!("{base}: upload response has no Location"))
        })?;
        url::Url::parse(base)
            .and_then(|b| b.join(loc))
            .map(|u| u.to_string())
            .map_err(|e| RegistryError::Protocol(format!("{base}: bad Location {loc:?}: {e}")))
    }

    /// PUTs a manifest under `reference`; returns its digest (checked against the registry's).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let scope = format!("repository:{repo}:pull,push");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Body::Bytes(bytes),
            &scope,
        )?;
        if resp.status() != 201 {
            let code = resp.status();
            return Err(status_error(resp, code, &url));
        }
        let digest = Digest::of(bytes);
        if let Some(h) = resp.header("Docker-Content-Digest") {
            if h != digest.as_str() {
                return Err(RegistryError::Integrity(format!(
                    "{repo}:{reference}: the registry stored {h}, we sent {digest}"
                )));
            }
        }
        Ok(digest)
    }
}

fn with_query(url: &str, k: &str, v: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{k}={v}")
}

/// Reads at most `cap` bytes; more is an error.
pub fn read_capped(r: impl Read, cap: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let mut buf = Vec::new();
    r.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| RegistryError::Transport(format!("{what}: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(RegistryError::Protocol(format!(
            "{what}: larger than the {} limit",
            size_text(cap)
        )));
    }
    Ok(buf)
}

/// A limit in the largest unit that divides it (`4 MiB`, `512 bytes`).
fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn status_error(resp: ureq::Response, code: u16, url: &str) -> RegistryError {
    let body = read_capped(resp.into_reader(), 4096, "error body").unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    RegistryError::Status(format!("{url}: {code} {detail}").trim().to_string())
}

/// A transport error without the URL ureq puts in front (the caller names it) and without
/// repeated parts.
pub(crate) fn transport_detail(t: &ureq::Transport) -> String {
    let mut parts: Vec<String> = vec![t.kind().to_string()];
    if let Some(m) = t.message() {
        parts.push(m.to_string());
    }
    let mut source = std::error::Error::source(t);
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        if !out.iter().any(|o| o.contains(&p) || p.contains(o.as_str())) {
            out.push(p);
        } else if let Some(o) = out.iter_mut().find(|o| p.contains(o.as_str())) {
            // Keep the longer, more specific wording.
            *o = p;
        }
    }
    out.join(": ")
}

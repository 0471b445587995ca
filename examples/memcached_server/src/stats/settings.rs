//! How the server was started, as `stats settings` reports it.

use std::net::SocketAddr;

use crate::config::Config;
use crate::store::Store;
use crate::tls::TlsFiles;

/// Default [`Settings::max_connections`] (`--max-connections`): memcached's `-c` default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The listen queue length `mio::net::TcpListener::bind` asks for (the standard library's).
const TCP_BACKLOG: u32 = 128;

/// What `stats settings` reports besides the store's limits: the parts of the [`Config`] a
/// client may ask about.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address the server listens on.
    pub listen: SocketAddr,
    /// Most connections open at once (`--max-connections`).
    pub max_connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// The TLS certificate and key, if the listener serves TLS.
    pub tls: Option<TlsFiles>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 11211)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            threads: 1,
            tls: None,
        }
    }
}

impl Settings {
    /// The settings of a server started with `cfg` (its real port is set once bound).
    pub fn of(cfg: &Config) -> Settings {
        Settings {
            listen: cfg.listen,
            max_connections: cfg.max_connections,
            threads: cfg.threads.max(1),
            tls: cfg.tls.clone(),
        }
    }

    /// memcached's `stats settings` names, in its order, for those that mean something here,
    /// with this server's values. Where the server has no such mechanism the value says so as
    /// memcached would with it turned off (`udpport 0`, `domain_socket NULL`, `lru_crawler no`,
    /// `slab_reassign no`, `track_sizes no`, ...); `detail_enabled` is whether `stats detail`
    /// is on (`detail`), with memcached's prefix delimiter; the tuning numbers of
    /// mechanisms it does not have (slab growth factor, chunk sizes, LRU percentages, logger
    /// buffers, extstore) are left out.
    pub fn report(&self, store: &Store, detail: bool) -> Vec<(&'static str, String)> {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let tls = self.tls.as_ref();
        let path = |p: Option<&std::path::Path>| {
            p.map_or_else(|| "(null)".to_string(), |p| p.display().to_string())
        };
        vec![
            ("maxbytes", store.memory_limit().to_string()),
            ("maxconns", self.max_connections.to_string()),
            ("tcpport", self.listen.port().to_string()),
            ("udpport", "0".to_string()),
            ("inter", self.listen.ip().to_string()),
            ("verbosity", "0".to_string()),
            ("evictions", "on".to_string()),
            ("domain_socket", "NULL".to_string()),
            ("shutdown_command", yes_no(false)),
            ("num_threads", self.threads.to_string()),
            ("stat_key_prefix", ":".to_string()),
            ("detail_enabled", yes_no(detail)),
            ("cas_enabled", yes_no(true)),
            ("tcp_backlog", TCP_BACKLOG.to_string()),
            ("binding_protocol", "auto-negotiate".to_string()),
            ("auth_enabled_sasl", yes_no(false)),
            ("auth_enabled_ascii", yes_no(false)),
            ("item_size_max", store.max_item_size().to_string()),
            ("maxconns_fast", yes_no(true)),
            ("slab_reassign", yes_no(false)),
            ("lru_crawler", yes_no(false)),
            ("flush_enabled", yes_no(true)),
            ("dump_enabled", yes_no(true)),
            ("lru_maintainer_thread", yes_no(false)),
            ("lru_segmented", yes_no(false)),
            ("temp_lru", yes_no(false)),
            ("idle_timeout", "0".to_string()),
            ("track_sizes", yes_no(false)),
            ("inline_ascii_response", yes_no(false)),
            ("ssl_enabled", yes_no(tls.is_some())),
            ("ssl_chain_cert", path(tls.map(|t| t.cert.as_path()))),
            ("ssl_key", path(tls.map(|t| t.key.as_path()))),
            ("ssl_verify_mode", "0".to_string()),
            ("ssl_keyformat", "1".to_string()),
            ("ssl_ca_cert", "NULL".to_string()),
            ("ssl_kernel_tls", yes_no(false)),
            ("ssl_min_version", "tlsv1.2".to_string()),
        ]
    }
}

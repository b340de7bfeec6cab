//! A small safe wrapper over libmysqlclient (mysqlclient-sys): one owned
//! connection with connect/read/write timeouts, TCP or a unix socket, TLS
//! with a CA file and server-certificate verification, and result rows as
//! strings or NULL. Blocking: callers run it on a blocking thread.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::sync::Once;
use std::time::Duration;

use mysqlclient_sys as ffi;

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub socket: Option<PathBuf>,
    pub username: String,
    pub password: Option<String>,
    pub database: Option<String>,
    pub connect_timeout: Duration,
    /// Also bounds each query: the server must answer within it.
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Speak TLS (then the server certificate is verified unless
    /// `tls_verify` is false).
    pub tls: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_verify: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("MySQL error {code}: {message}")]
pub struct MysqlError {
    pub code: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

pub struct Connection {
    raw: NonNull<ffi::MYSQL>,
}

// A connection is used by one thread at a time (moved, never shared).
unsafe impl Send for Connection {}

static LIBRARY: Once = Once::new();

fn cstring(s: &str) -> Result<CString, MysqlError> {
    CString::new(s).map_err(|_| MysqlError {
        code: 0,
        message: format!("`{s}` contains a NUL byte"),
    })
}

impl Connection {
    pub fn connect(opts: &ConnectOptions) -> Result<Connection, MysqlError> {
        // mysql_library_init is not thread-safe; it must run once before any
        // thread calls mysql_init.
        // SAFETY: no arguments; guarded by Once.
        LIBRARY.call_once(|| unsafe {
            ffi::mysql_server_init(0, ptr::null_mut(), ptr::null_mut());
        });
        // SAFETY: mysql_init(NULL) allocates a handle or returns NULL.
        let raw = NonNull::new(unsafe { ffi::mysql_init(ptr::null_mut()) }).ok_or(MysqlError {
            code: 0,
            message: "out of memory in mysql_init".into(),
        })?;
        let conn = Connection { raw };
        // Unsigned-int options are read through the pointer during the call.
        // (The option enum has no nameable type in mysqlclient-sys for
        // MariaDB, hence a macro rather than a helper taking it.)
        macro_rules! set_u32 {
            ($opt:ident, $value:expr) => {{
                let v: u32 = $value;
                // SAFETY: a live handle and a pointer valid for the call.
                unsafe {
                    ffi::mysql_options(
                        raw.as_ptr(),
                        ffi::mysql_option::$opt,
                        (&v as *const u32).cast(),
                    )
                };
            }};
        }
        let secs = |d: Duration| d.as_secs().clamp(1, u32::MAX as u64) as u32;
        set_u32!(MYSQL_OPT_CONNECT_TIMEOUT, secs(opts.connect_timeout));
        set_u32!(MYSQL_OPT_READ_TIMEOUT, secs(opts.read_timeout));
        set_u32!(MYSQL_OPT_WRITE_TIMEOUT, secs(opts.write_timeout));
        let protocol = if opts.socket.is_some() {
            ffi::mysql_protocol_type::MYSQL_PROTOCOL_SOCKET
        } else {
            ffi::mysql_protocol_type::MYSQL_PROTOCOL_TCP
        };
        set_u32!(MYSQL_OPT_PROTOCOL, protocol as u32);
        if opts.tls {
            if let Some(ca) = &opts.tls_ca_file {
                let ca = cstring(&ca.to_string_lossy())?;
                // SAFETY: the option copies the string.
                unsafe {
                    ffi::mysql_options(
                        raw.as_ptr(),
                        ffi::mysql_option::MYSQL_OPT_SSL_CA,
                        ca.as_ptr().cast(),
                    )
                };
            }
            // Connector/C then refuses a server without TLS or with a
            // certificate that does not verify.
            let verify: ffi::my_bool = opts.tls_verify.into();
            // SAFETY: my_bool option read through the pointer during the call.
            unsafe {
                ffi::mysql_options(
                    raw.as_ptr(),
                    ffi::mysql_option::MYSQL_OPT_SSL_VERIFY_SERVER_CERT,
                    (&verify as *const ffi::my_bool).cast(),
                )
            };
        }
        let host = cstring(&opts.host)?;
        let user = cstring(&opts.username)?;
        let password = opts.password.as_deref().map(cstring).transpose()?;
        let database = opts.database.as_deref().map(cstring).transpose()?;
        let socket = opts
            .socket
            .as_ref()
            .map(|s| cstring(&s.to_string_lossy()))
            .transpose()?;
        let opt_ptr = |c: &Option<CString>| c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is a live C string or NULL for the call.
        let ok = unsafe {
            ffi::mysql_real_connect(
                raw.as_ptr(),
                host.as_ptr(),
                user.as_ptr(),
                opt_ptr(&password),
                opt_ptr(&database),
                opts.port as u32,
                opt_ptr(&socket),
                0,
            )
        };
        if ok.is_null() {
            return Err(conn.error());
        }
        Ok(conn)
    }

    fn error(&self) -> MysqlError {
        // SAFETY: the handle is live; mysql_error returns a NUL-terminated
        // string owned by it.
        unsafe {
            MysqlError {
                code: ffi::mysql_errno(self.raw.as_ptr()),
                message: CStr::from_ptr(ffi::mysql_error(self.raw.as_ptr()))
                    .to_string_lossy()
                    .into_owned(),
            }
        }
    }

    /// Runs one statement; rows come back as strings (NULL as None).
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, MysqlError> {
        let raw = self.raw.as_ptr();
        // SAFETY: sql bytes are valid for the call; the result set is freed
        // below on every path.
        unsafe {
            if ffi::mysql_real_query(raw, sql.as_ptr().cast(), sql.len() as _) != 0 {
                return Err(self.error());
            }
            let res = ffi::mysql_store_result(raw);
            if res.is_null() {
                if ffi::mysql_field_count(raw) == 0 {
                    return Ok(QueryResult::default());
                }
                return Err(self.error());
            }
            let n = ffi::mysql_num_fields(res) as usize;
            let fields = ffi::mysql_fetch_fields(res);
            let columns = (0..n)
                .map(|i| {
                    CStr::from_ptr((*fields.add(i)).name)
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            let mut rows = Vec::new();
            loop {
                let row = ffi::mysql_fetch_row(res);
                if row.is_null() {
                    break;
                }
                let lengths = ffi::mysql_fetch_lengths(res);
                let values = (0..n)
                    .map(|i| {
                        let cell = *row.add(i);
                        (!cell.is_null()).then(|| {
                            let bytes = std::slice::from_raw_parts(
                                cell as *const u8,
                                *lengths.add(i) as usize,
                            );
                            String::from_utf8_lossy(bytes).into_owned()
                        })
                    })
                    .collect();
                rows.push(values);
            }
            ffi::mysql_free_result(res);
            Ok(QueryResult { columns, rows })
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the handle came from mysql_init and is closed once.
        unsafe { ffi::mysql_close(self.raw.as_ptr()) }
    }
}

//! An embedded PostgreSQL cluster started from the system's binaries (`initdb`, `pg_ctl`).
//!
//! Used by `brewlytics up` (a persistent data directory) and by every test (a throwaway one).
//! Existing crates either download PostgreSQL or refuse to run as root; this one uses what the
//! machine has and, as root, runs the server as the `postgres` user through `runuser`.
//!
//! The server listens on 127.0.0.1, with password (SCRAM) authentication, on a port leased
//! outside the kernel's ephemeral range ([`crate::ports`]; started again on another if that
//! one is taken meanwhile), and on a Unix socket in a directory of its own with trust
//! authentication for the local superuser.
//! It is stopped when the [`EmbeddedCluster`] is dropped or [`EmbeddedCluster::stop`] is called;
//! a small watchdog process also stops it if the owning process dies without dropping it
//! (kill -9, `std::process::exit` in a test harness), so no server outlives its owner.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dburl::DbUrl;
use crate::ports::{self, Lease};

/// The superuser the embedded cluster is initialised with.
pub const SUPERUSER: &str = "brewlytics";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install them with \
         `apt-get install postgresql` (Debian/Ubuntu) or set PG_BINDIR to their directory"
    )]
    BinariesMissing,
    #[error("running as root needs the `postgres` system user to run the server: {0}")]
    NoPostgresUser(String),
    #[error("the data directory {path} is not usable by the `postgres` user: {why}")]
    DataDir { path: PathBuf, why: String },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(
        "PostgreSQL (pid {pid}) is already running on {}{}; stop it, or use another --data-dir",
        pgdata.display(),
        port.map(|p| format!(" (port {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        pgdata: PathBuf,
        pid: u32,
        port: Option<u16>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Keep the cluster's files here and reuse them on the next start; `None` means a
    /// throwaway directory that is removed on stop.
    pub data_dir: Option<PathBuf>,
    /// Turn off fsync and synchronous commit: for tests, where the OS never crashes.
    pub unsafe_fast: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn throwaway() -> Self {
        Self {
            data_dir: None,
            unsafe_fast: true,
            settings: Vec::new(),
        }
    }

    pub fn persistent(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: Some(dir.into()),
            unsafe_fast: false,
            settings: Vec::new(),
        }
    }
}

/// A running PostgreSQL server. Stopped on drop.
#[derive(Debug)]
pub struct EmbeddedCluster {
    bindir: PathBuf,
    root: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    password: String,
    as_postgres: bool,
    throwaway: bool,
    watchdog: Option<Child>,
    stopped: bool,
    /// The port's lease, held while the cluster is ours (restarts keep the port).
    lease: Option<Lease>,
}

impl EmbeddedCluster {
    /// Initialises (if needed) and starts a cluster. Blocking: call it before the runtime's
    /// hot path, or through `spawn_blocking`.
    pub fn start(opts: ClusterOptions) -> Result<Self, ClusterError> {
        let bindir = find_bindir()?;
        let as_postgres = running_as_root();
        let (root, throwaway) = match &opts.data_dir {
            Some(dir) => {
                fs::create_dir_all(dir)?;
                (fs::canonicalize(dir)?, false)
            }
            None => (make_temp_dir()?, true),
        };
        let pgdata = root.join("pgdata");
        // A server already running on these files must be left alone: nothing below (the
        // password, the settings, the port file) may be written under it.
        if let Some(pid) = live_postmaster(&pgdata) {
            return Err(ClusterError::AlreadyRunning {
                port: fs::read_to_string(pgdata.join("brewlytics.port.conf"))
                    .ok()
                    .and_then(|t| t.trim().strip_prefix("port = ")?.trim().parse().ok()),
                pgdata,
                pid,
            });
        }
        let socket_dir = root.join("socket");
        fs::create_dir_all(&socket_dir)?;
        let password = load_or_make_password(&root)?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid))?;
            check_reachable(&root)?;
        }
        let mut cluster = Self {
            bindir,
            root,
            pgdata,
            socket_dir,
            port: 0,
            password,
            as_postgres,
            throwaway,
            watchdog: None,
            stopped: true,
            lease: None,
        };
        if !cluster.pgdata.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        cluster.launch(&opts)?;
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    /// The superuser's password (for TCP connections).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A TCP URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> DbUrl {
        DbUrl::parse(&format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        ))
        .expect("a well-formed URL")
    }

    /// `psql` connected over the Unix socket as the superuser to `database`, untouched by
    /// the `PG*` variables of the environment; add the script or command to run.
    pub fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ]);
        for var in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs `psql -c sql` over the Unix socket as the superuser.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let out = self
            .psql_command(database)
            .args(["-q", "-A", "-t", "-c", sql])
            .stdin(Stdio::null())
            .output()?;
        checked("psql", out).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }

    /// Creates `name` unless it exists.
    pub fn ensure_database(&self, name: &str) -> Result<(), ClusterError> {
        let exists = self.psql(
            "postgres",
            &format!(
                "select 1 from pg_database where datname = '{}'",
                name.replace('\'', "''")
            ),
        )?;
        if exists.is_empty() {
            self.psql(
                "postgres",
                &format!("create database \"{}\"", name.replace('"', "\"\"")),
            )?;
        }
        Ok(())
    }

    /// Drops `name`, disconnecting its sessions.
    pub fn drop_database(&self, name: &str) -> Result<(), ClusterError> {
        self.psql(
            "postgres",
            &format!(
                "drop database if exists \"{}\" with (force)",
                name.replace('"', "\"\"")
            ),
        )
        .map(|_| ())
    }

    /// `pg_ctl stop -m immediate` then start again on the same port: a crash and recovery.
    pub fn crash_restart(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"])?;
        self.pg_ctl_start()
    }

    /// `pg_ctl stop -m fast` then start again on the same port.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])?;
        self.pg_ctl_start()
    }

    /// Stops the server (fast shutdown) but keeps the cluster: [`Self::resume`] starts it
    /// again on the same port. For tests of a database that goes away for a while.
    pub fn pause(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])
    }

    /// Starts a paused server again.
    pub fn resume(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl_start()
    }

    /// Stops the server (fast shutdown) and the watchdog; removes a throwaway directory.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let result = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.throwaway {
            let _ = fs::remove_dir_all(&self.root);
        }
        self.lease = None;
        result
    }

    /// The postmaster's process id, while running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        let pwfile = self.root.join("initdb.pw");
        write_private(&pwfile, &self.password, self.as_postgres)?;
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--no-instructions")
            .output();
        let _ = fs::remove_file(&pwfile);
        checked("initdb", out?)?;
        // Replication connections over TCP authenticate like the others.
        let hba = self.pgdata.join("pg_hba.conf");
        let mut f = fs::OpenOptions::new().append(true).open(&hba)?;
        writeln!(f, "host replication all 127.0.0.1/32 scram-sha-256")?;
        Ok(())
    }

    fn launch(&mut self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            (
                "unix_socket_directories".into(),
                self.socket_dir.display().to_string(),
            ),
            ("wal_level".into(), "logical".into()),
            ("max_wal_senders".into(), "20".into()),
            ("max_replication_slots".into(), "20".into()),
            ("max_connections".into(), "200".into()),
            ("logging_collector".into(), "off".into()),
        ];
        if opts.unsafe_fast {
            settings.push(("fsync".into(), "off".into()));
            settings.push(("synchronous_commit".into(), "off".into()));
            settings.push(("full_page_writes".into(), "off".into()));
        }
        settings.extend(opts.settings.iter().cloned());
        let mut conf = String::from("# written by brewlytics on every start\n");
        for (k, v) in &settings {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        let conf_path = self.pgdata.join("brewlytics.conf");
        fs::write(&conf_path, conf)?;
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&conf_path, Some(uid), Some(gid))?;
        }
        let main_conf = self.pgdata.join("postgresql.conf");
        let text = fs::read_to_string(&main_conf)?;
        if !text.contains("include_if_exists = 'brewlytics.conf'") {
            let mut f = fs::OpenOptions::new().append(true).open(&main_conf)?;
            writeln!(f, "include_if_exists = 'brewlytics.conf'")?;
            writeln!(f, "include_if_exists = 'brewlytics.port.conf'")?;
        }

        // A port leased outside the ephemeral range (crate::ports); should something outside
        // those rules take it before the server binds it, the server starts on another.
        ports::retry_in_use(
            5,
            || {
                let lease = ports::lease().map_err(|e| ClusterError::Command {
                    what: "choosing a port".into(),
                    detail: e.to_string(),
                })?;
                self.port = lease.port();
                self.pg_ctl_start()?;
                self.lease = Some(lease);
                Ok(())
            },
            |e| matches!(e, ClusterError::Command { detail, .. } if ports::says_in_use(detail)),
        )?;
        self.stopped = false;
        self.watchdog = Some(self.spawn_watchdog()?);
        Ok(())
    }

    fn pg_ctl_start(&mut self) -> Result<(), ClusterError> {
        let port_conf = self.pgdata.join("brewlytics.port.conf");
        fs::write(&port_conf, format!("port = {}\n", self.port))?;
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&port_conf, Some(uid), Some(gid))?;
        }
        let log = self.root.join("postgres.log");
        let seen = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log.display().to_string()])
            .map_err(|e| with_server_log(e, &log, seen))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.pgdata)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        checked(&format!("pg_ctl {}", args[0]), out).map(|_| ())
    }

    /// A detached shell that stops the server once this process is gone. Its loop ends when
    /// the owner dies or after a day, whichever comes first.
    fn spawn_watchdog(&self) -> Result<Child, ClusterError> {
        let stop = format!(
            "{} {} -D {} stop -m immediate -w -t 30",
            if self.as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            shell_quote(&self.bindir.join("pg_ctl").display().to_string()),
            shell_quote(&self.pgdata.display().to_string()),
        );
        let cleanup = if self.throwaway {
            format!("; rm -rf {}", shell_quote(&self.root.display().to_string()))
        } else {
            String::new()
        };
        Ok(crate::watchdog::spawn(
            &format!("{stop} >/dev/null 2>&1{cleanup}"),
            None,
        )?)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Settings of an outer environment must not leak into the embedded server.
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir("/");
        cmd
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `PG_BINDIR`, else
/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    find_bindir_from(std::env::var("PG_BINDIR").ok())
}

/// [`find_bindir`] with an explicit override in place of `PG_BINDIR`.
pub fn find_bindir_from(override_dir: Option<String>) -> Result<PathBuf, ClusterError> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = override_dir {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesMissing)
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, d)| has_server(d))
            .collect();
        versions.sort();
        if let Some((_, dir)) = versions.pop() {
            return Ok(dir);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if has_server(&dir) {
                return Ok(fs::canonicalize(dir.join("initdb"))?
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or(dir));
            }
        }
    }
    Err(ClusterError::BinariesMissing)
}

/// The pid of a postmaster running on `pgdata`: the one its `postmaster.pid` names, if that
/// process is alive and is a `postgres`.
pub fn live_postmaster(pgdata: &Path) -> Option<u32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "postgres").then_some(pid)
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn postgres_ids() -> Result<(u32, u32), ClusterError> {
    let id = |flag: &str| -> Result<u32, ClusterError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| ClusterError::NoPostgresUser(e.to_string()))?;
        if !out.status.success() {
            return Err(ClusterError::NoPostgresUser(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| ClusterError::NoPostgresUser("unexpected output of `id`".into()))
    };
    Ok((id("-u")?, id("-g")?))
}

/// As root the server runs as `postgres`, which must be able to reach the data directory.
fn check_reachable(dir: &Path) -> Result<(), ClusterError> {
    let ok = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ClusterError::DataDir {
            path: dir.to_path_buf(),
            why: "a parent directory is not searchable by that user; choose another --data-dir \
                  (for example under /var/tmp)"
                .into(),
        })
    }
}

fn make_temp_dir() -> Result<PathBuf, ClusterError> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .subsec_nanos();
        let dir = base.join(format!(
            "brewlytics-pg-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClusterError::Io(std::io::Error::other(
        "could not create a temporary directory",
    )))
}

/// A persistent cluster keeps its password in `<root>/superuser.password` (mode 0600).
fn load_or_make_password(root: &Path) -> Result<String, ClusterError> {
    let path = root.join("superuser.password");
    if let Ok(text) = fs::read_to_string(&path) {
        let text = text.trim().to_owned();
        if !text.is_empty() {
            return Ok(text);
        }
    }
    let password = random_token(24)?;
    write_private(&path, &password, false)?;
    Ok(password)
}

pub(crate) fn write_private(
    path: &Path,
    text: &str,
    for_postgres: bool,
) -> Result<(), ClusterError> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    if for_postgres {
        let (uid, gid) = postgres_ids()?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// Letters and digits from the kernel's random source.
pub(crate) fn random_token(len: usize) -> Result<String, ClusterError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = vec![0u8; len];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    Ok(raw
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// `pg_ctl start` says only "could not start server; examine the log output": the server's
/// own error lines of this start (from byte `seen` of its log) are added to `e`.
fn with_server_log(e: ClusterError, log: &Path, seen: u64) -> ClusterError {
    let ClusterError::Command { what, mut detail } = e else {
        return e;
    };
    let text = fs::read(log).unwrap_or_default();
    let tail = String::from_utf8_lossy(text.get(seen as usize..).unwrap_or_default());
    let errors: Vec<&str> = tail
        .lines()
        .filter(|l| l.contains("FATAL") || l.contains("LOG:  could not bind"))
        .take(3)
        .collect();
    if !errors.is_empty() {
        detail = format!("{detail} | {}", errors.join(" | "));
    }
    ClusterError::Command { what, detail }
}

fn checked(what: &str, out: Output) -> Result<Output, ClusterError> {
    if out.status.success() {
        Ok(out)
    } else {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        Err(ClusterError::Command {
            what: what.to_owned(),
            detail: detail.lines().take(5).collect::<Vec<_>>().join(" | "),
        })
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_alphanumeric_and_sized() {
        let t = random_token(24).unwrap();
        assert_eq!(t.len(), 24);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(t, random_token(24).unwrap());
    }

    #[test]
    fn a_running_server_is_left_alone() {
        let c = EmbeddedCluster::start(ClusterOptions::throwaway()).unwrap();
        let pid = c.postmaster_pid().unwrap();
        assert_eq!(live_postmaster(&c.pgdata), Some(pid));
        let port_file = c.pgdata.join("brewlytics.port.conf");
        let before = fs::read_to_string(&port_file).unwrap();
        let again = EmbeddedCluster::start(ClusterOptions::persistent(c.data_dir())).unwrap_err();
        assert!(matches!(again, ClusterError::AlreadyRunning { pid: p, .. } if p == pid));
        let text = again.to_string();
        assert!(text.contains(&format!("pid {pid}")), "{text}");
        assert!(text.contains(&format!("port {}", c.port())), "{text}");
        assert_eq!(fs::read_to_string(&port_file).unwrap(), before);
        // The first still answers.
        assert_eq!(c.psql("postgres", "select 1").unwrap(), "1");
    }

    #[test]
    fn a_start_on_a_taken_port_says_so_with_the_servers_words() {
        let mut c = EmbeddedCluster::start(ClusterOptions::throwaway()).unwrap();
        c.pause().unwrap();
        // Something outside the port rules binds the port while the server is down.
        let squatter = std::net::TcpListener::bind(("127.0.0.1", c.port())).unwrap();
        let err = c.resume().unwrap_err();
        assert!(
            matches!(&err, ClusterError::Command { detail, .. } if ports::says_in_use(detail)),
            "{err}"
        );
        drop(squatter);
        c.resume().unwrap();
        assert_eq!(c.psql("postgres", "select 1").unwrap(), "1");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}

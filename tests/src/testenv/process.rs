//! Long-lived control-plane processes that can never outlive the test process.
//!
//! A shared control plane lives in a `static`, whose destructor never runs,
//! and a test binary can be killed with SIGKILL. So the components are not
//! the test process's direct children: each runs under a small bash watchdog
//! whose stdin is a pipe only the test process holds. Whenever that pipe
//! closes (an orderly stop, a normal exit or a crash alike) the watchdog sends
//! SIGTERM, then SIGKILL after a grace period. A janitor, tied to the test
//! process the same way, removes the working directory once the components are
//! gone. All of this needs no `unsafe` (no `prctl(PR_SET_PDEATHSIG)`).
//!
//! A component can also be stopped on purpose and started again with the same
//! command line (ports, certificates, data directory), for fault tests: the
//! owner then writes a command line to the pipe instead of closing it, so the
//! watchdog stops the component at once (no waiting for dependents) and
//! exits, and a new watchdog takes over the same pid file and log.
//!
//! These use `std::process`, not `tokio::process`: a child must not be tied to
//! the runtime of whichever test happened to start it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Error;

/// Seconds between SIGTERM and SIGKILL.
pub(crate) const GRACE_SECONDS: u64 = 5;

/// Runs a command and stops it when stdin reaches EOF. Arguments: the pid
/// file, the grace period in seconds, the pid files of components that must
/// stop first, `--`, then the command.
///
/// Background jobs of a non-interactive shell read /dev/null, so the owner's
/// pipe is kept on fd 3 and read by a background reader; `wait -n` (bash
/// 5.1+) then returns when either the component exits on its own (the
/// watchdog exits with its status, so the harness notices a crash) or the
/// reader ends.
///
/// When the owner dies, every watchdog sees EOF at once. Stopping etcd and
/// the apiserver together wedges both (the apiserver's shutdown writes to
/// etcd, etcd's waits for the apiserver's watches), so etcd's watchdog first
/// waits for the apiserver to exit.
///
/// A line on the pipe is a deliberate stop of this one component (the owner
/// lives on): `stop` sends SIGTERM at once, without waiting for dependents;
/// `kill` sends SIGKILL, like a crash. The reader reports which by its exit
/// status (10, 11; 0 for EOF).
const WATCHDOG: &str = r#"
pidfile=$1 grace=$2
shift 2
after=()
while [[ $1 != -- ]]; do after+=("$1"); shift; done
shift
name=${1##*/}
exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
echo "$pid" >"$pidfile"
(
  read -r -u 3 line
  case $line in
    stop) exit 10 ;;
    kill) exit 11 ;;
  esac
  exit 0
) &
reader=$!
exec 3<&-
wait -n "$pid" "$reader"
status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  kill "$reader" 2>/dev/null
  exit "$status"
fi
if ((status == 11)); then
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  exit
fi
((status == 10)) && after=()
for f in "${after[@]}"; do
  [[ -f $f ]] || continue
  dependent=$(<"$f")
  for ((i = 0; i < (grace + 1) * 10; i++)); do
    kill -0 "$dependent" 2>/dev/null || break
    sleep 0.1
  done
done
kill -TERM "$pid" 2>/dev/null
for ((i = 0; i < grace * 10; i++)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -KILL "$pid" 2>/dev/null; then
  echo "watchdog: $name ignored SIGTERM for ${grace}s; sent SIGKILL" >&2
fi
wait "$pid"
"#;

/// Removes `$1` once stdin reaches EOF and every process named in `$1/*.pid`
/// has exited, unless `$2` is 1. Gives up waiting after 30 s so a wedged
/// process cannot keep it alive forever.
const JANITOR: &str = r#"
dir=$1 keep=$2
while read -r _; do :; done
deadline=$((SECONDS + 30))
for f in "$dir"/*.pid; do
  [[ -f $f ]] || continue
  pid=$(<"$f")
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
done
[[ $keep == 1 ]] || rm -rf -- "$dir"
"#;

/// One control-plane component running under its watchdog.
///
/// The running state sits behind a mutex so a component shared through a
/// `&'static ControlPlane` can be stopped and started again by a fault test.
#[derive(Debug)]
pub(crate) struct Component {
    pub(crate) name: String,
    pub(crate) log_path: PathBuf,
    /// How to start it again: the same command line, directory and order.
    launch: Launch,
    run: Mutex<Run>,
}

/// The command line of a component, kept to start it again.
#[derive(Debug)]
struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    dir: PathBuf,
    stop_after: Vec<String>,
}

/// One start of a component: its watchdog and the pipe that stops it.
#[derive(Debug)]
struct Run {
    watchdog: Child,
    /// Closing this asks the watchdog to stop the component.
    stop: Option<ChildStdin>,
    status: Option<ExitStatus>,
}

/// How [`Component::stop_now`] stops a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM, then SIGKILL after the grace period: an orderly shutdown.
    Graceful,
    /// SIGKILL at once: a crash, or a machine losing power.
    Kill,
}

impl Component {
    /// Starts `program args` under a watchdog, with stdout and stderr written
    /// to `<dir>/<name>.log`. When the owner dies, the watchdog stops it only
    /// after the components named in `stop_after` have exited.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        dir: &Path,
        stop_after: &[&str],
    ) -> Result<Self, Error> {
        Self::spawn_with_env(name, program, args, &[], dir, stop_after)
    }

    /// [`Component::spawn`] with extra environment variables.
    pub(crate) fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[OsString],
        envs: &[(String, String)],
        dir: &Path,
        stop_after: &[&str],
    ) -> Result<Self, Error> {
        let log_path = dir.join(format!("{name}.log"));
        let launch = Launch {
            program: program.to_owned(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            dir: dir.to_owned(),
            stop_after: stop_after.iter().map(|s| (*s).to_owned()).collect(),
        };
        let log = File::create(&log_path).map_err(|source| Error::Io {
            action: "create",
            path: log_path.clone(),
            source,
        })?;
        let run = launch.start(name, &log_path, log)?;
        Ok(Self {
            name: name.to_owned(),
            log_path,
            launch,
            run: Mutex::new(run),
        })
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // A panic while holding the lock leaves `Run` consistent (each field
        // is replaced whole), so a poisoned lock is still usable.
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_mut(&mut self) -> &mut Run {
        self.run.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The exit status if the component (and so its watchdog) has exited.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.run().exited()
    }

    /// Asks the watchdog to stop the component; does not wait.
    pub(crate) fn request_stop(&mut self) {
        self.run_mut().stop.take();
    }

    /// Waits until the watchdog has stopped the component; kills the watchdog
    /// itself as a last resort.
    pub(crate) fn wait_stopped(&mut self) {
        let name = self.name.clone();
        let run = self.run_mut();
        run.stop.take();
        run.wait_exited(&name);
    }

    /// Stops the component now, without waiting for the components that
    /// normally stop first, and waits until it has exited. Returns its exit
    /// status; `None` if it had already exited.
    pub(crate) fn stop_now(&self, mode: StopMode) -> Option<ExitStatus> {
        let mut run = self.run();
        if run.exited().is_some() {
            return None;
        }
        let command: &[u8] = match mode {
            StopMode::Graceful => b"stop\n",
            StopMode::Kill => b"kill\n",
        };
        if let Some(mut pipe) = run.stop.take() {
            // A failed write means the watchdog is gone already; dropping
            // the pipe (EOF) is the fallback either way.
            let _ = pipe.write_all(command).and_then(|()| pipe.flush());
        }
        run.wait_exited(&self.name);
        run.status
    }

    /// Starts the component again with the same command line, appending to
    /// its log. Fails with [`Error::StillRunning`] if it has not exited.
    pub(crate) fn restart(&self) -> Result<(), Error> {
        let mut run = self.run();
        if run.exited().is_none() {
            return Err(Error::StillRunning {
                component: self.name.clone(),
            });
        }
        let mut log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .map_err(|source| Error::Io {
                action: "open",
                path: self.log_path.clone(),
                source,
            })?;
        // Marks the restart in the log, so its reader can tell the runs apart.
        let _ = writeln!(log, "--- fluxgate testenv: restarting {} ---", self.name);
        *run = self.launch.start(&self.name, &self.log_path, log)?;
        Ok(())
    }

    /// The last `lines` lines of this component's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }
}

impl Launch {
    /// Spawns the watchdog running this command line, logging to `log`.
    fn start(&self, name: &str, log_path: &Path, log: File) -> Result<Run, Error> {
        let log_err = log.try_clone().map_err(|source| Error::Io {
            action: "duplicate the handle of",
            path: log_path.to_owned(),
            source,
        })?;
        let mut watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(format!("fluxgate-{name}-watchdog"))
            .arg(pid_file(&self.dir, name))
            .arg(GRACE_SECONDS.to_string())
            .args(
                self.stop_after
                    .iter()
                    .map(|other| pid_file(&self.dir, other)),
            )
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C in the terminal reaches only the
            // test process (or dev-cluster binary), which then stops the
            // components in order instead of all of them dying at once.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                component: name.to_owned(),
                source,
            })?;
        let stop = watchdog.stdin.take();
        Ok(Run {
            watchdog,
            stop,
            status: None,
        })
    }
}

impl Run {
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            // An error here means the child was already reaped, which only
            // `wait_exited` does, and it records the status first.
            self.status = self.watchdog.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until the watchdog has exited (after its pipe was closed or
    /// written to); kills the watchdog itself as a last resort.
    fn wait_exited(&mut self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(GRACE_SECONDS + 3);
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                tracing::warn!(component = %name, "watchdog did not exit; killing it");
                let _ = self.watchdog.kill();
                self.status = self.watchdog.wait().ok();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.wait_stopped();
    }
}

/// Removes the working directory after the components exit, even when the
/// test process dies without running destructors.
#[derive(Debug)]
pub(crate) struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Janitor {
    pub(crate) fn spawn(dir: &Path, keep: bool) -> Result<Self, Error> {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(JANITOR)
            .arg("fluxgate-testenv-janitor")
            .arg(dir)
            .arg(if keep { "1" } else { "0" })
            // Not inside `dir`: the janitor deletes it.
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                component: "janitor".to_owned(),
                source,
            })?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Lets the janitor clean up now and waits for it (call after every
    /// component has stopped).
    pub(crate) fn finish(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.finish();
    }
}

fn pid_file(dir: &Path, component: &str) -> PathBuf {
    dir.join(format!("{component}.pid"))
}

/// The last `lines` lines of the file at `path`, reading at most its last
/// 256 KiB so a chatty log cannot make failure reports slow.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

//! The last step: the working directory (created if missing, as runc does), `HOME` from the
//! image's /etc/passwd when the environment has none, the PATH lookup, and `execve`. A
//! failure comes back in runc's words, which docker turns into exit codes 126 and 127.

use std::ffi::CString;
use std::io;

use super::sys::cstr;

/// PATH when the process's environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The executables to try for `name`, in order: itself when it has a `/`, else each PATH
/// entry joined with it.
pub fn candidates(name: &str, env: &[String]) -> Vec<String> {
    if name.contains('/') {
        return vec![name.to_owned()];
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
        .collect()
}

/// runc's words for a failed exec of `name`.
pub fn exec_error(name: &str, errno: i32) -> String {
    let err = io::Error::from_raw_os_error(errno);
    match errno {
        libc::ENOENT if !name.contains('/') => {
            format!("exec: \"{name}\": executable file not found in $PATH")
        }
        libc::ENOENT => format!("exec: \"{name}\": stat {name}: no such file or directory"),
        libc::EACCES => format!("exec: \"{name}\": permission denied"),
        _ => format!("exec: \"{name}\": {}", err.to_string().to_lowercase()),
    }
}

/// Creates the working directory if it is missing (as root, before the user switch).
pub fn make_cwd(cwd: &str) -> Result<(), String> {
    if std::fs::metadata(cwd).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    std::fs::create_dir_all(cwd).map_err(|e| format!("mkdir {cwd}: {e}"))
}

/// The home directory of `uid` in a passwd file's text.
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid)).then(|| f[5].to_owned())
    })
}

/// `env` with `HOME` added when missing: the user's entry in the image's /etc/passwd, else
/// `/` (runc's rule).
pub fn with_home(mut env: Vec<String>, uid: u32) -> Vec<String> {
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| home_of(&p, uid))
            .unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

/// runc's create-time check (Go's `exec.LookPath`) that the program is there and
/// executable, so that a held process fails at `create` rather than at `start`: a path
/// must name an executable file (else permission denied); a bare name must find one in
/// the PATH (else not found).
pub fn check_found(args: &[String], env: &[String], cwd: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(name) = args.first() else {
        return Err("exec: no command given".into());
    };
    let executable = |c: &String| -> Result<(), i32> {
        match std::fs::metadata(std::path::Path::new(cwd).join(c)) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(libc::EACCES),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::ENOENT)),
        }
    };
    let candidates = candidates(name, env);
    if name.contains('/') {
        return candidates
            .iter()
            .try_for_each(executable)
            .map_err(|errno| exec_error(name, errno));
    }
    if candidates.iter().any(|c| executable(c).is_ok()) {
        Ok(())
    } else {
        Err(exec_error(name, libc::ENOENT))
    }
}

/// Enters `cwd` and execs `args` with `env`; returns only on failure, with runc's message.
pub fn exec(args: &[String], env: &[String], cwd: &str) -> String {
    if let Err(e) = std::env::set_current_dir(cwd) {
        return format!("chdir to cwd ({cwd:?}) set in config.json failed: {e}");
    }
    let Some(name) = args.first() else {
        return "exec: no command given".into();
    };
    let all = |v: &[String]| {
        v.iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<CString>, _>>()
    };
    let (argv, envp, paths) = match (all(args), all(env), all(&candidates(name, env))) {
        (Ok(a), Ok(e), Ok(p)) => (a, e, p),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return e,
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let mut errno = libc::ENOENT;
    for p in &paths {
        // SAFETY: NUL-terminated path and NULL-terminated arrays of NUL-terminated strings,
        // all alive for the call.
        unsafe { libc::execve(p.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT);
        // Keep looking past missing entries; remember a permission problem.
        if e != libc::ENOENT && e != libc::ENOTDIR {
            errno = e;
        }
    }
    exec_error(name, errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_order() {
        let env = vec!["PATH=/usr/bin:/bin/".to_owned()];
        assert_eq!(candidates("sh", &env), ["/usr/bin/sh", "/bin/sh"]);
        assert_eq!(candidates("./run", &env), ["./run"]);
        assert_eq!(candidates("ls", &[]).len(), 6);
    }

    #[test]
    fn runcs_words() {
        assert_eq!(
            exec_error("nope", libc::ENOENT),
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            exec_error("/bin/nope", libc::ENOENT),
            "exec: \"/bin/nope\": stat /bin/nope: no such file or directory"
        );
        assert_eq!(
            exec_error("/etc/passwd", libc::EACCES),
            "exec: \"/etc/passwd\": permission denied"
        );
    }

    #[test]
    fn home_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbad line\nwww:x:33:33::/var/www:/bin/false\n";
        assert_eq!(home_of(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_of(passwd, 1000), None);
    }
}

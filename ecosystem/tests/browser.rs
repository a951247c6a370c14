//! The login example (`examples/login.rs`) in a real browser: headless Chromium, driven over
//! WebDriver by Debian's `chromedriver`, logs in, sees its flash once, logs out, is shut out
//! again and sees the logout's flash once, with the example's default settings (memory store,
//! a `Secure` cookie, which Chromium keeps for `http://127.0.0.1`, a secure context).
//!
//! The example has no form page, so the test builds each form in the page with JavaScript,
//! types into its fields and clicks its button: the browser sends the form as a person's
//! would, and keeps or drops the cookie as it would for them.
//!
//! It needs `chromium` and `chromedriver` on `PATH` or at Debian's paths (Debian's packages
//! `chromium` and `chromium-driver`; `scripts/browser.sh install` installs them). Without them
//! each test is skipped, and says so on the terminal (cargo shows it as passed, for libtest has
//! no skip decided at run time); with `SESSION_ENGINE_REQUIRE_BROWSER=1`, as CI sets it, each
//! fails instead. fantoccini is the WebDriver client; the test starts `chromedriver` itself, on
//! a port the system chooses, and kills it with the browser at the end.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use support::Example;

mod support;

/// How long any one step may take: a process to start, a WebDriver command to answer, a
/// page to show what is expected.
const PATIENCE: Duration = Duration::from_secs(30);

/// Starting Chromium on a busy two-core machine can take longer than a command.
const START_PATIENCE: Duration = Duration::from_secs(60);

// ---- the example ----

/// Starts the login example with its default settings and the memory store.
fn example() -> Example {
    let envs = [
        (
            "SESSION_SECRETS",
            "a browser secret that is at least 32 bytes",
        ),
        ("SESSION_STORE", "memory"),
        ("RUST_LOG", "info"),
    ];
    Example::start(env!("CARGO_BIN_EXE_login"), &envs, PATIENCE)
}

// ---- finding the programs ----

/// The program `name`: the first executable file on `PATH`, else at one of Debian's paths (where
/// `scripts/browser.sh check` looks too).
fn program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let debian = ["/usr/bin", "/usr/lib/chromium"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name));
    on_path.chain(debian).find(|candidate| {
        candidate
            .metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Chromium and chromedriver, where they were found.
struct Programs {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// Chromium and chromedriver; `None` when either is missing, after saying on the terminal that
/// the test `test` is skipped and why; a panic instead when `SESSION_ENGINE_REQUIRE_BROWSER=1`.
fn programs_or_skip(test: &str) -> Option<Programs> {
    match (program("chromium"), program("chromedriver")) {
        (Some(chromium), Some(chromedriver)) => Some(Programs {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let missing: Vec<&str> = [("chromium", chromium), ("chromedriver", chromedriver)]
                .into_iter()
                .filter_map(|(name, found)| found.is_none().then_some(name))
                .collect();
            let why = format!(
                "{} not on PATH nor at /usr/bin or /usr/lib/chromium: install Debian's \
                 `chromium` and `chromium-driver` (scripts/browser.sh install) to run it",
                missing.join(" and ")
            );
            if std::env::var_os("SESSION_ENGINE_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
                panic!("the browser test is required (SESSION_ENGINE_REQUIRE_BROWSER=1): {why}");
            }
            // Straight to the terminal: libtest keeps what `eprintln!` prints from a test that
            // passes to itself.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
    }
}

/// Chromium refuses to start as root unless its sandbox is off.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

// ---- the driver and the browser ----

/// A running `chromedriver`, in a process group of its own with the Chromium it starts:
/// dropping it kills the whole group, so that no browser outlives the test, even one whose
/// WebDriver session could not be ended.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start(programs: &Programs) -> Self {
        let mut child = Command::new(&programs.chromedriver)
            // The system chooses the port, and the driver says which.
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = child.stdout.take().expect("piped");
        let mut driver = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end, so that the driver never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split_once("started successfully on port ")
                    .and_then(|(_, rest)| rest.trim_end_matches('.').parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(port) => driver.addr = SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => panic!("chromedriver did not say where it listens within {PATIENCE:?}"),
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is the driver's: `process_group(0)`.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser profile directory of its own, new and empty, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "session-engine-browser-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier run with the same process id is no fresh profile.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("a fresh profile directory");
        Self(path)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Headless Chromium in a WebDriver session; when dropped (the test ended, passed or not), its
/// driver is killed with the browser, and its profile removed (fields drop in order).
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: Profile,
}

/// What the browser shows: the path of the page, the HTTP status its document came with,
/// and its text.
#[derive(Debug, PartialEq)]
struct Page {
    path: String,
    status: u16,
    text: String,
}

/// What `step` gives within `patience`; a panic that names `what` when it fails or takes
/// longer (fantoccini bounds no command in time by itself).
async fn within<T, E: std::fmt::Display>(
    what: &str,
    patience: Duration,
    step: impl Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(patience, step).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what}: {error}"),
        Err(_) => panic!("{what}: no answer within {patience:?}"),
    }
}

impl Browser {
    async fn start(programs: &Programs) -> Self {
        let driver = Driver::start(programs);
        let profile = Profile::new();
        // Without the background networking, Chromium reaches for Google's hosts at every
        // start, which a closed network refuses, many at a time.
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", profile.0.display()),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
        ];
        if running_as_root() {
            args.push("--no-sandbox".to_owned());
        }
        let capabilities = [
            ("browserName", json!("chrome")),
            (
                "goog:chromeOptions",
                json!({ "binary": programs.chromium, "args": args }),
            ),
            (
                "timeouts",
                json!({ "implicit": 0, "pageLoad": 30_000, "script": 30_000 }),
            ),
        ];
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(
            capabilities
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        );
        let client = within(
            "Chromium starts under chromedriver",
            START_PATIENCE,
            builder.connect(&format!("http://{}", driver.addr)),
        )
        .await;
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `url`, and waits for it to load.
    async fn open(&self, url: &str) -> Page {
        within(&format!("open {url}"), PATIENCE, self.client.goto(url)).await;
        self.page().await
    }

    /// Runs `script` in the page with `args`, and returns what it returns.
    async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        within(
            &format!("run {script:?}"),
            PATIENCE,
            self.client.execute(script, args),
        )
        .await
    }

    async fn try_page(&self) -> Result<Page, String> {
        let value = tokio::time::timeout(
            PATIENCE,
            self.client.execute(
                "const [navigation] = performance.getEntriesByType('navigation');
                 return [document.readyState, location.pathname,
                         navigation ? navigation.responseStatus : 0,
                         document.body ? document.body.innerText : ''];",
                vec![],
            ),
        )
        .await
        .map_err(|_| format!("no answer within {PATIENCE:?}"))?
        .map_err(|error| error.to_string())?;
        match value.as_array().map(Vec::as_slice) {
            Some([ready, path, status, text]) if ready == "complete" => Ok(Page {
                path: path.as_str().unwrap_or_default().to_owned(),
                status: status
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0),
                text: text.as_str().unwrap_or_default().to_owned(),
            }),
            _ => Err(format!("not loaded yet: {value}")),
        }
    }

    /// The page shown now, once loaded.
    async fn page(&self) -> Page {
        self.wait_for_page(|_| true).await
    }

    /// The first loaded page that `ready` accepts, looked at every 50 ms; a panic that says
    /// what was shown last when none is within [`PATIENCE`].
    async fn wait_for_page(&self, ready: impl Fn(&Page) -> bool) -> Page {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Between two documents a script can fail: it is looked at again.
            let last = self.try_page().await;
            match last {
                Ok(page) if ready(&page) => return page,
                _ if Instant::now() >= deadline => {
                    panic!("no page as expected within {PATIENCE:?}; last seen: {last:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Replaces the page's content with a same-origin `<form method="post" action=…>` with
    /// a text field per name in `fields` (`password` a password field) and a submit button.
    async fn build_form(&self, action: &str, fields: &[&str]) {
        self.script(
            "const [action, fields] = arguments;
             const form = document.createElement('form');
             form.method = 'post';
             form.action = action;
             for (const name of fields) {
                 const input = document.createElement('input');
                 input.name = name;
                 input.id = name;
                 input.type = name === 'password' ? 'password' : 'text';
                 form.append(input);
             }
             const button = document.createElement('button');
             button.type = 'submit';
             button.id = 'submit';
             button.textContent = 'Submit';
             form.append(button);
             document.body.replaceChildren(form);",
            vec![json!(action), json!(fields)],
        )
        .await;
    }

    /// Builds the form to `action` on the page shown, types each value into its field key by
    /// key, clicks the button, and returns the page the form's answer shows.
    async fn submit(&self, action: &str, fields: &[(&str, &str)]) -> Page {
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        self.build_form(action, &names).await;
        for (name, value) in fields {
            let selector = format!("#{name}");
            let field = within(
                &format!("find {selector}"),
                PATIENCE,
                self.client.find(Locator::Css(&selector)),
            )
            .await;
            within(
                &format!("type into {selector}"),
                PATIENCE,
                field.send_keys(value),
            )
            .await;
        }
        let button = within(
            "find #submit",
            PATIENCE,
            self.client.find(Locator::Css("#submit")),
        )
        .await;
        within("click #submit", PATIENCE, button.click()).await;
        self.wait_for_page(|page| page.path == action).await
    }

    /// The cookies the browser keeps for the page shown, as WebDriver reports them
    /// (`HttpOnly` ones included).
    async fn cookies(&self) -> Vec<Cookie<'static>> {
        within("get the cookies", PATIENCE, self.client.get_all_cookies()).await
    }

    /// Ends the WebDriver session, which closes Chromium; a test that panics before leaves
    /// that to the driver's end, which kills the browser with it.
    async fn close(self) {
        within("end the session", PATIENCE, self.client.clone().close()).await;
    }
}

// ---- the tests ----

/// The session cookie in `cookies`, the example's default name.
fn session_cookie<'c>(cookies: &'c [Cookie<'static>]) -> Option<&'c Cookie<'static>> {
    cookies.iter().find(|cookie| cookie.name() == "sid")
}

#[tokio::test]
async fn a_browser_logs_in_sees_its_flash_once_logs_out_and_sees_that_flash_once() {
    let Some(programs) =
        programs_or_skip("a_browser_logs_in_sees_its_flash_once_logs_out_and_sees_that_flash_once")
    else {
        return;
    };
    let app = example();
    let browser = Browser::start(&programs).await;

    let home = browser.open(&app.url("/")).await;
    assert_eq!((home.status, home.text.as_str()), (200, "home"));
    assert!(
        browser.cookies().await.is_empty(),
        "no session before a login"
    );

    let welcome = browser
        .submit(
            "/login",
            &[
                ("username", "ada"),
                ("password", "correct horse battery staple"),
            ],
        )
        .await;
    assert_eq!(
        (welcome.status, welcome.text.as_str()),
        (200, "welcome ada")
    );

    // The default cookie is `Secure`: Chromium keeps it for http://127.0.0.1, a secure
    // context, and never shows it to scripts.
    let cookies = browser.cookies().await;
    let cookie = session_cookie(&cookies)
        .unwrap_or_else(|| panic!("the browser keeps the session cookie: {cookies:?}"));
    assert_eq!(cookie.secure(), Some(true), "{cookie:?}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(browser.script("return document.cookie;", vec![]).await, "");

    let protected = browser.open(&app.url("/protected")).await;
    assert_eq!(
        (protected.status, protected.text.as_str()),
        (200, "hello ada")
    );

    // The flash, shown once.
    assert_eq!(
        browser.open(&app.url("/")).await.text,
        "home\nlogged in as ada"
    );
    assert_eq!(browser.open(&app.url("/")).await.text, "home");

    let logged_in = cookie.value().to_owned();
    let bye = browser.submit("/logout", &[]).await;
    assert_eq!((bye.status, bye.text.as_str()), (200, "bye"));
    // The logged-in session is gone; the browser holds a fresh one, for the flash.
    let cookies = browser.cookies().await;
    let fresh = session_cookie(&cookies)
        .unwrap_or_else(|| panic!("a fresh session for the flash: {cookies:?}"));
    assert_ne!(fresh.value(), logged_in);

    let protected = browser.open(&app.url("/protected")).await;
    assert_eq!(protected.status, 401, "{protected:?}");
    assert_ne!(protected.text, "hello ada");
    assert_eq!(browser.open(&app.url("/")).await.text, "home\nlogged out");
    assert_eq!(browser.open(&app.url("/")).await.text, "home");
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_401_and_leaves_no_cookie() {
    let Some(programs) = programs_or_skip("a_wrong_password_is_a_401_and_leaves_no_cookie") else {
        return;
    };
    let app = example();
    let browser = Browser::start(&programs).await;
    browser.open(&app.url("/")).await;

    let wrong = browser
        .submit(
            "/login",
            &[("username", "ada"), ("password", "hunter2hunter2")],
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.text.as_str()),
        (401, "wrong username or password")
    );
    let cookies = browser.cookies().await;
    assert!(cookies.is_empty(), "{cookies:?}");

    let protected = browser.open(&app.url("/protected")).await;
    assert_eq!(protected.status, 401, "{protected:?}");
    let cookies = browser.cookies().await;
    assert!(cookies.is_empty(), "{cookies:?}");
    browser.close().await;
}

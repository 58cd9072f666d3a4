package devpostgres

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	embeddedpostgres "github.com/fergusstrange/embedded-postgres"
)

// serverEnv carries a serverConfig to the re-executed binary that runs the
// embedded server (see MaybeServe).
const serverEnv = "DEVPOSTGRES_SERVER"

const readyLine = "devpostgres: ready"

// Options says where and how to start an embedded server.
type Options struct {
	Port           uint16
	User, Password string
	// CacheDir holds the binaries archive, the extracted binaries and, when
	// Persist is set, the data.
	CacheDir string
	// Persist keeps the data in CacheDir/data between runs; otherwise the
	// data lives in a temporary folder removed by Stop.
	Persist bool
	// RepoURL is the Maven repository (https) to download the binaries from
	// (MavenCentral when empty); when it cannot be reached, Maven is asked
	// instead. The binaries must have the pinned digests either way.
	RepoURL string
}

// serverConfig is what the server process needs; it travels as JSON.
type serverConfig struct {
	Port           uint16
	User, Password string
	CacheDir       string
	BinariesDir    string
	RuntimeDir     string
	DataDir        string
	LogDir         string
	Params         map[string]string
}

// Server is a running embedded PostgreSQL, served by a child process.
type Server struct {
	// How says in a few words how the binaries were obtained ("" when they
	// were cached) and where the data lives.
	How, DataDir string
	// Password is the superuser's: Options.Password, or else the random one
	// of the data folder, kept (0600) in PasswordFile.
	Password, PasswordFile string

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	done    chan error
	cleanup func()
}

// DefaultCacheDir is ${XDG_CACHE_HOME:-~/.cache}/orders-service, except for
// root without XDG_CACHE_HOME: /var/cache/orders-service, because the server
// then runs as the unprivileged user nobody, who cannot enter /root.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "orders-service"), nil
	}
	if os.Geteuid() == 0 {
		return "/var/cache/orders-service", nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache folder (set XDG_CACHE_HOME): %w", err)
	}
	return filepath.Join(d, "orders-service"), nil
}

// Start fetches the binaries if they are not cached and starts an embedded
// server as a child process of this one. The server stops when Stop is
// called or when this process dies (the child then reads end of input).
//
// initdb and postgres refuse to run as root, so when this process is root
// the child runs as nobody. nobody then owns one folder only, its data folder
// (0700, created fresh with the data): the cache, the binaries, the copy of
// this executable and the password file stay root's, in folders nobody cannot
// write, and root follows no path inside nobody's folder. Without an
// Options.Password, the superuser gets a random password per data folder.
func Start(ctx context.Context, o Options) (_ *Server, err error) {
	if o.RepoURL == "" {
		o.RepoURL = MavenCentral
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = nobody()
		if err := reachableByOthers(o.CacheDir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.CacheDir), 0o755); err != nil {
		return nil, fmt.Errorf("create cache folder: %w", err)
	}
	if cred != nil {
		if err := reclaimCache(o.CacheDir, cred); err != nil {
			return nil, err
		}
	}
	if err := ownDir(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("cache folder: %w", err)
	}
	// One start at a time per cache: downloads and the extraction of the
	// binaries are shared.
	unlock, err := lock(filepath.Join(o.CacheDir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	how, err := ensureArchive(ctx, o.CacheDir, o.RepoURL)
	if err != nil {
		return nil, err
	}
	binDir := filepath.Join(o.CacheDir, "postgres-"+Version)

	s := &Server{How: how, done: make(chan error, 1), cleanup: func() {}}
	cfg := serverConfig{
		Port: o.Port, User: o.User,
		CacheDir:    o.CacheDir,
		BinariesDir: binDir,
		Params:      map[string]string{"max_connections": "200"},
	}
	// base holds this run's files that the server's user must not change
	// (the executable it runs, the password file) and its data folder.
	baseMode := os.FileMode(0o700)
	if cred != nil {
		baseMode = 0o711 // nobody passes through to its folder and the executable
	}
	var base string
	if o.Persist {
		base = filepath.Join(o.CacheDir, "run")
		if err := ownDir(base, baseMode); err != nil {
			return nil, fmt.Errorf("data folder: %w", err)
		}
	} else {
		if base, err = os.MkdirTemp("", "devpostgres-"); err != nil {
			return nil, fmt.Errorf("create data folder: %w", err)
		}
		s.cleanup = func() { os.RemoveAll(base) }
		if err := os.Chmod(base, baseMode); err != nil {
			s.cleanup()
			return nil, err
		}
		// Throwaway data need not survive a crash.
		cfg.Params["fsync"] = "off"
		cfg.Params["synchronous_commit"] = "off"
		cfg.Params["full_page_writes"] = "off"
	}
	defer func() {
		if err != nil {
			s.cleanup()
		}
	}()
	pgDir := filepath.Join(base, "pg")
	fresh, err := serverDir(pgDir, cred)
	if err != nil {
		return nil, err
	}
	s.Password = o.Password
	if s.Password == "" {
		s.PasswordFile = filepath.Join(base, "superuser-password")
		if s.Password, err = superuserPassword(s.PasswordFile, fresh); err != nil {
			return nil, fmt.Errorf("%w; remove %s to start afresh", err, pgDir)
		}
	}
	cfg.Password = s.Password
	if err := ensureBinaries(archivePath(o.CacheDir), binDir); err != nil {
		return nil, err
	}
	cfg.RuntimeDir, cfg.DataDir, cfg.LogDir = filepath.Join(pgDir, "runtime"), filepath.Join(pgDir, "data"), filepath.Join(pgDir, "log")
	s.DataDir = cfg.DataDir

	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	if cred != nil {
		// The executable may sit where nobody cannot read it (under /root,
		// or in go's 0700 build folders); run a copy beside the data.
		if exe, err = copyExecutable(exe, filepath.Join(base, "devpostgres-server")); err != nil {
			return nil, err
		}
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serverEnv+"="+string(js))
	// Its own process group: Ctrl-C at a terminal goes to the command, and
	// the server stops only after the command is done with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.Stderr = os.Stderr
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start embedded PostgreSQL server process: %w", err)
	}
	s.cmd = cmd
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if sc.Text() == readyLine && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		s.done <- cmd.Wait()
	}()
	select {
	case ok := <-ready:
		if ok {
			return s, nil
		}
		err := <-s.done
		return nil, fmt.Errorf("embedded PostgreSQL did not start (%v); its log is in %s", err, cfg.LogDir)
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
}

// Stop stops the server, waiting up to a minute for a clean shutdown, and
// removes throwaway data.
func (s *Server) Stop() error {
	defer s.cleanup()
	s.stdin.Close()
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("stop embedded PostgreSQL: %w", err)
		}
		return nil
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.done
		return errors.New("stop embedded PostgreSQL: no clean shutdown within a minute, killed")
	}
}

// MaybeServe runs the embedded server and exits when this process was
// started by Start to do so; otherwise it returns at once. Call it first in
// main (and in TestMain of tests that call Start).
func MaybeServe() {
	js, ok := os.LookupEnv(serverEnv)
	if !ok {
		return
	}
	if err := serve(js, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "devpostgres:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve starts PostgreSQL, prints readyLine, and stops it when stdin closes
// (the parent is done or dead) or on SIGTERM.
func serve(js string, stdin io.Reader, stdout io.Writer) error {
	var cfg serverConfig
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", serverEnv, err)
	}
	// embedded-postgres leaves one log file per start in TMPDIR; keep them
	// in the data folder, only this run's.
	if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
		return fmt.Errorf("create log folder: %w", err)
	}
	old, _ := filepath.Glob(filepath.Join(cfg.LogDir, "embedded_postgres_log*"))
	for _, f := range old {
		os.Remove(f)
	}
	os.Setenv("TMPDIR", cfg.LogDir)
	signal.Ignore(syscall.SIGINT)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	pg := embeddedpostgres.NewDatabase(embeddedpostgres.DefaultConfig().
		Version(embeddedpostgres.PostgresVersion(Version)).
		Port(uint32(cfg.Port)).
		Username(cfg.User).
		Password(cfg.Password).
		Database("postgres").
		CachePath(cfg.CacheDir).
		BinariesPath(cfg.BinariesDir).
		RuntimePath(cfg.RuntimeDir).
		DataPath(cfg.DataDir).
		Locale("C").
		Encoding("UTF8").
		StartParameters(cfg.Params).
		StartTimeout(2 * time.Minute).
		Logger(nil))
	if err := pg.Start(); err != nil {
		return fmt.Errorf("start embedded PostgreSQL on port %d: %w", cfg.Port, err)
	}
	fmt.Fprintln(stdout, readyLine)
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-term:
	}
	if err := pg.Stop(); err != nil {
		return fmt.Errorf("stop embedded PostgreSQL: %w", err)
	}
	return nil
}

// nobody is the unprivileged user the server runs as when this process is
// root: the system's "nobody", or uid and gid 65534.
func nobody() *syscall.Credential {
	uid, gid := uint32(65534), uint32(65534)
	if u, err := user.Lookup("nobody"); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uid = uint32(n)
		}
		if n, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(n)
		}
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
}

// reachableByOthers checks that an unprivileged user can enter every folder
// above dir, which the server needs when it runs as nobody.
func reachableByOthers(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("cache folder %s: %s is closed to other users, and as root the embedded PostgreSQL runs as nobody; set XDG_CACHE_HOME to a folder outside it", abs, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func copyExecutable(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("copy own executable: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".exe-")
	if err != nil {
		return "", fmt.Errorf("copy own executable: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return "", fmt.Errorf("copy own executable: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("copy own executable: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", err
	}
	// Rename, not overwrite: a copy another run still executes stays intact.
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("copy own executable: %w", err)
	}
	return dst, nil
}

// String describes the server for the one line the tool prints.
func (s *Server) String() string {
	var b strings.Builder
	b.WriteString("data in " + s.DataDir)
	if s.PasswordFile != "" {
		b.WriteString("; superuser password in " + s.PasswordFile)
	}
	if s.How != "" {
		b.WriteString("; binaries " + s.How)
	}
	return b.String()
}

// lock takes an exclusive lock on path, waiting for another holder. The
// file is never followed if it is a symlink.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock cache: %w", err)
	}
	if err := checkOwn(f.Stat()); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cache: %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cache: %w", err)
	}
	return func() { f.Close() }, nil
}

package devpostgres

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/xi2/xz"
)

// checkOwn fails unless fi (from Stat or Lstat) is this process's user's and
// writable by no one else: then no other user can have put anything there.
func checkOwn(fi fs.FileInfo, err error) error {
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner information")
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("belongs to uid %d, not to uid %d who runs this", st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("writable by other users (mode %o)", fi.Mode().Perm())
	}
	return nil
}

// ownDir makes dir a folder of this process's user with mode perm, or checks
// that it is one already: not a symlink, not another user's, writable by no
// one else. An existing folder's mode is set to perm.
func ownDir(dir string, perm os.FileMode) error {
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder (a symlink?): refused; remove it", dir)
	}
	if err := checkOwn(fi, nil); err != nil {
		return fmt.Errorf("%s %w: refused; remove it", dir, err)
	}
	return os.Chmod(dir, perm)
}

// reclaimCache takes back a cache folder that earlier versions of this tool
// gave to cred's user (nobody): the folder becomes root's again, and what
// that user may have written or replaced in it (the lock, the binaries, the
// archive: anything not root's) is removed, to be made again. The run folder
// is left for ownDir to refuse (its old data is not used). RemoveAll follows
// no symlink, and once the folder is root's nobody can add anything to it.
func reclaimCache(dir string, cred *syscall.Credential) error {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return nil // missing, or refused by ownDir
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != cred.Uid {
		return nil
	}
	if err := os.Lchown(dir, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("take back cache folder %s from uid %d: %w", dir, cred.Uid, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{".lock", "postgres-" + Version, filepath.Base(archivePath(dir))} {
		p := filepath.Join(dir, name)
		if checkOwn(os.Lstat(p)) == nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("take back cache folder: %w", err)
		}
	}
	return nil
}

// serverDir makes dir the server's own folder (0700), owned by cred's user
// when cred is set (nothing inside it is ever followed by this process
// then), or checks that the folder it finds is one. It reports whether it
// created the folder.
func serverDir(dir string, cred *syscall.Credential) (fresh bool, err error) {
	uid := uint32(os.Geteuid())
	if cred != nil {
		uid = cred.Uid
	}
	switch err := os.Mkdir(dir, 0o700); {
	case err == nil:
		if cred != nil {
			if err := os.Lchown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				return false, fmt.Errorf("give the data folder to uid %d: %w", cred.Uid, err)
			}
		}
		return true, nil
	case !errors.Is(err, fs.ErrExist):
		return false, fmt.Errorf("create data folder: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid != uid || fi.Mode().Perm() != 0o700 {
		return false, fmt.Errorf("data folder %s is not the server's 0700 folder of uid %d (a symlink, another user's, or open to others): refused; remove it", dir, uid)
	}
	return false, nil
}

// superuserPassword returns the data folder's superuser password kept in
// file: a new random one when fresh (the data folder was just created),
// else the one written then. The file is the user's, 0600, never followed.
func superuserPassword(file string, fresh bool) (string, error) {
	if fresh {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		pw := hex.EncodeToString(b)
		if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return "", fmt.Errorf("keep the superuser password: %w", err)
		}
		if _, err := f.WriteString(pw + "\n"); err != nil {
			f.Close()
			return "", fmt.Errorf("keep the superuser password: %w", err)
		}
		return pw, f.Close()
	}
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", fmt.Errorf("read the data folder's superuser password: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err := checkOwn(fi, err); err != nil || fi.Mode().Perm() != 0o600 {
		return "", fmt.Errorf("superuser password file %s is not this user's 0600 file: refused", file)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return "", err
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("superuser password file %s is empty", file)
	}
	return pw, nil
}

// ensureBinaries extracts archive into binDir unless a whole extraction is
// there: a folder of this process's user, writable by no one else, with the
// .extracted marker file that is written last. Extraction happens in a
// temporary folder renamed into place, by this process (never by the
// server's user), so the binaries nobody may run are ones nobody could change.
func ensureBinaries(archive, binDir string) error {
	fi, err := os.Lstat(binDir)
	switch {
	case err == nil:
		if !fi.IsDir() {
			return fmt.Errorf("PostgreSQL binaries folder %s is not a folder (a symlink?): refused; remove it", binDir)
		}
		if err := checkOwn(fi, nil); err != nil {
			return fmt.Errorf("PostgreSQL binaries folder %s %w: refused; remove it", binDir, err)
		}
		marker := filepath.Join(binDir, ".extracted")
		mi, err := os.Lstat(marker)
		if err == nil {
			if !mi.Mode().IsRegular() || checkOwn(mi, nil) != nil {
				return fmt.Errorf("PostgreSQL binaries folder %s: %s is not this tool's marker (a symlink, or another user's): refused; remove the folder", binDir, marker)
			}
			return nil
		}
		// No marker: an extraction cut short. Start again (RemoveAll
		// follows no symlink).
		if err := os.RemoveAll(binDir); err != nil {
			return fmt.Errorf("remove incomplete PostgreSQL binaries: %w", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(binDir), ".postgres-")
	if err != nil {
		return fmt.Errorf("extract PostgreSQL binaries: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := extractTxz(archive, tmp); err != nil {
		return fmt.Errorf("extract PostgreSQL binaries from %s: %w", archive, err)
	}
	f, err := os.OpenFile(filepath.Join(tmp, ".extracted"), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, binDir)
}

// extractTxz unpacks a tar.xz archive into the empty folder dst: folders,
// files and symlinks, none writable by group or others.
func extractTxz(archive, dst string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	xr, err := xz.NewReader(f, 0)
	if err != nil {
		return err
	}
	tr := tar.NewReader(xr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q leaves the folder", h.Name)
		}
		target := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		mode := h.FileInfo().Mode().Perm() &^ 0o022
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %q: unexpected type %q", h.Name, h.Typeflag)
		}
	}
}

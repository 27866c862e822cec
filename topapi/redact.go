package topapi

import (
	"path/filepath"
	"regexp"
	"strings"
)

// Redacted replaces a secret in a redacted command line.
const Redacted = "***"

// Redact returns a copy of a command line with secret-looking values
// replaced by [Redacted]. It errs on the side of hiding: a value is hidden
// when its flag or key name has a component such as password, passwd, pass,
// pwd, secret, token, key, apikey, auth, credential(s), cookie, session or
// signature, unless the name ends in file, path or dir (those name where a
// secret is, not the secret). Covered forms:
//
//	--password=x  -password=x  --db-pass x  -Dapp.secret=x  TOKEN=x
//	https://user:pass@host/  https://host/?token=x&a=b
//	-H "Authorization: Bearer x"  -u user:pass  mysql -px  sshpass -p x
//
// Arguments that merely follow a flag and start with "-" are not hidden, so
// `--no-auth --verbose` stays readable.
func Redact(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	prog := ""
	if len(args) > 0 {
		prog = filepath.Base(args[0])
	}
	hideNext := false
	for i, a := range out {
		if i == 0 {
			out[i] = redactInline(a)
			continue
		}
		if hideNext {
			hideNext = false
			if !strings.HasPrefix(a, "-") || a == "-" {
				out[i] = Redacted
				continue
			}
		}
		switch {
		case (prog == "mysql" || prog == "mysqldump" || prog == "mariadb" || prog == "mysqladmin") &&
			strings.HasPrefix(a, "-p") && len(a) > 2 && !strings.HasPrefix(a, "--"):
			out[i] = "-p" + Redacted
			continue
		case prog == "sshpass" && a == "-p":
			hideNext = true
			continue
		case a == "-u" || a == "--user":
			// curl -u user:pass: hide the password part on the next argument.
			if i+1 < len(out) {
				if user, _, ok := strings.Cut(out[i+1], ":"); ok {
					out[i+1] = user + ":" + Redacted
				}
			}
			continue
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			name, _, hasValue := strings.Cut(a, "=")
			if sensitiveName(strings.TrimLeft(name, "-")) {
				if hasValue {
					out[i] = name + "=" + Redacted
				} else {
					hideNext = true
				}
				continue
			}
		}
		out[i] = redactInline(a)
	}
	return out
}

var (
	// scheme://user:pass@ — keep the user, hide the password.
	urlCredentials = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@/\s]*@`)
	// key=value pairs, alone or inside query strings and DSNs.
	keyValue = regexp.MustCompile(`([A-Za-z0-9_.-]+)=([^&;\s]*)`)
	// HTTP credentials passed as header arguments.
	authHeader = regexp.MustCompile(`(?i)\b((?:proxy-)?authorization|cookie|x-api-key|x-auth-token)(\s*:\s*).*`)
	bearer     = regexp.MustCompile(`(?i)\b(bearer|basic|token)(\s+)\S+`)
	// "--password x" inside one argument, as in sh -c "…".
	flagSpace = regexp.MustCompile(`(-{1,2}[A-Za-z0-9_.-]+)(\s+)([^\s-]\S*)`)
)

// redactInline hides secrets inside one argument: URL credentials,
// key=value pairs with a sensitive key, and authorization headers.
func redactInline(a string) string {
	if strings.Contains(a, "://") {
		a = urlCredentials.ReplaceAllString(a, "$1:"+Redacted+"@")
	}
	if strings.Contains(a, "=") {
		a = keyValue.ReplaceAllStringFunc(a, func(m string) string {
			k, _, _ := strings.Cut(m, "=")
			if sensitiveName(k) {
				return k + "=" + Redacted
			}
			return m
		})
	}
	if strings.ContainsAny(a, " \t") {
		a = flagSpace.ReplaceAllStringFunc(a, func(m string) string {
			sm := flagSpace.FindStringSubmatch(m)
			if sensitiveName(strings.TrimLeft(sm[1], "-")) {
				return sm[1] + sm[2] + Redacted
			}
			return m
		})
	}
	a = authHeader.ReplaceAllString(a, "$1$2"+Redacted)
	a = bearer.ReplaceAllString(a, "$1$2"+Redacted)
	return a
}

var sensitiveParts = map[string]bool{
	"password": true, "passwd": true, "pass": true, "pwd": true, "passphrase": true,
	"secret": true, "secrets": true, "token": true, "tokens": true, "key": true,
	"apikey": true, "auth": true, "credential": true, "credentials": true,
	"cookie": true, "session": true, "signature": true, "sig": true, "dsn": true,
	"privatekey": true, "accesskey": true,
}

var sensitiveSubstrings = []string{"password", "passwd", "secret", "token", "apikey", "credential"}

var locationParts = map[string]bool{"file": true, "path": true, "dir": true, "directory": true}

// sensitiveName reports whether a flag or key name looks like it holds a
// secret.
func sensitiveName(name string) bool {
	name = strings.ToLower(name)
	if name == "" {
		return false
	}
	parts := strings.FieldsFunc(name, func(r rune) bool { return r == '-' || r == '_' || r == '.' })
	if len(parts) == 0 || locationParts[parts[len(parts)-1]] {
		return false
	}
	for _, p := range parts {
		if sensitiveParts[p] {
			return true
		}
	}
	for _, s := range sensitiveSubstrings {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

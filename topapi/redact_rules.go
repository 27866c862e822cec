package topapi

import (
	"regexp"
	"strings"
	"unicode"
)

// The tables Redact works from. Names are compared lower-case.

// Words that, as a part of a flag or key name, mark its value as secret.
var secretParts = map[string]bool{
	"password": true, "passwd": true, "pass": true, "pwd": true, "passphrase": true, "passcode": true,
	"passkey": true, "passin": true, "passout": true, "pw": true,
	"secret": true, "secrets": true, "token": true, "tokens": true, "key": true, "apikey": true,
	"auth": true, "authorization": true, "cred": true, "creds": true, "credential": true, "credentials": true,
	"cookie": true, "cookies": true, "session": true, "sessionid": true, "signature": true, "sig": true,
	"dsn": true, "jwt": true, "bearer": true, "otp": true, "totp": true, "hmac": true, "webhook": true,
	"sas": true, "community": true, "requirepass": true, "masterauth": true, "connstr": true,
}

// Substrings that mark a one-word name (dbpassword, apitoken, xauthtoken).
var secretSubstrings = []string{"password", "passwd", "secret", "token", "apikey", "credential", "passphrase", "jwt", "bearer", "cred", "auth"}

// Words that contain a secret word but are not secrets.
var notSecret = map[string]bool{
	"bypass": true, "compass": true, "passive": true, "passthrough": true, "passthru": true, "askpass": true,
	"keyboard": true, "keyword": true, "keywords": true, "keyspace": true, "keystore": true, "keyring": true,
	"monkey": true, "donkey": true, "hockey": true, "turkey": true, "jockey": true, "whiskey": true, "turnkey": true,
	"author": true, "authors": true, "authority": true, "authorities": true, "authored": true,
	"incredible": true, "accredited": true,
}

// A name whose last part is one of these says where or what a secret is,
// not the secret: --token-file, --key-size, --secret-name, --auth-url.
var describesSecret = map[string]bool{
	"file": true, "files": true, "path": true, "dir": true, "directory": true, "filename": true, "fd": true,
	"env": true, "size": true, "type": true, "length": true, "len": true, "bits": true, "algorithm": true,
	"alg": true, "format": true, "ttl": true, "timeout": true, "name": true, "url": true, "uri": true,
	"endpoint": true, "host": true, "port": true, "method": true, "mode": true, "provider": true,
	"server": true, "realm": true, "scope": true, "region": true, "user": true, "username": true,
	"header": true, "location": true, "store": true, "helper": true, "command": true, "cmd": true,
	"database": true,
}

// A name starting with one of these is a switch that turns a secret off.
var negations = map[string]bool{"no": true, "disable": true, "disabled": true, "skip": true, "without": true, "ignore": true}

// Bare words that, as a positional argument, are followed by a secret
// (nmcli … password X, redis-cli AUTH X).
var secretWords = map[string]bool{"password": true, "passwd": true, "passphrase": true}

// Flags whose value is user:password; the password is hidden.
var userFlags = map[string]bool{"user": true, "u": true, "proxy-user": true, "basic-auth": true, "userpass": true}

// sensitiveName reports whether a flag or key name looks like it names a
// secret: one of its parts (split at - _ . / : and camelCase) is a secret
// word, and the name does not only say where or what the secret is.
func sensitiveName(name string) bool {
	ws := nameWords(name)
	if len(ws) == 0 {
		return false
	}
	if last := ws[len(ws)-1]; describesSecret[last] || strings.HasSuffix(last, "file") && last != "file" && !secretParts[last] {
		return false
	}
	if len(ws) > 1 && negations[ws[0]] {
		return false
	}
	for _, w := range ws {
		if secretWord(w) {
			return true
		}
	}
	return false
}

func secretWord(w string) bool {
	if secretParts[w] {
		return true
	}
	if notSecret[w] || len(w) < 4 {
		return false
	}
	for _, s := range secretSubstrings {
		if strings.Contains(w, s) {
			return true
		}
	}
	// storepass, keypass, dbpwd, accesskey, masterkey.
	return strings.HasSuffix(w, "pass") || strings.HasSuffix(w, "pwd") || strings.HasSuffix(w, "key")
}

// nameWords splits a name into lower-case words at punctuation and at
// camelCase boundaries: "X-Amz-Security-Token" → x amz security token,
// "keyStorePassword" → key store password, "APIKey" → api key.
func nameWords(name string) []string {
	var out []string
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		rs := []rune(part)
		start := 0
		for i := 1; i < len(rs); i++ {
			lowerToUpper := unicode.IsLower(rs[i-1]) && unicode.IsUpper(rs[i])
			acronymEnd := i+1 < len(rs) && unicode.IsUpper(rs[i-1]) && unicode.IsUpper(rs[i]) && unicode.IsLower(rs[i+1])
			if lowerToUpper || acronymEnd {
				out = append(out, strings.ToLower(string(rs[start:i])))
				start = i
			}
		}
		out = append(out, strings.ToLower(string(rs[start:])))
	}
	return out
}

// Values that are credentials whatever flag they follow. Group 1, when
// there is one, is kept.
var tokenShapes = []*regexp.Regexp{
	regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b`),            // AWS access key IDs
	regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{20,}\b`),                               // GitHub tokens
	regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{20,}\b`),                             // GitHub fine-grained tokens
	regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{20,}`),                                   // GitLab
	regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}`),                              // Slack
	regexp.MustCompile(`\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b`),              // Stripe
	regexp.MustCompile(`\bsk-[A-Za-z0-9_-]{20,}`),                                      // OpenAI-style API keys
	regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}`),                                      // Google API keys
	regexp.MustCompile(`\bnpm_[A-Za-z0-9]{36}\b`),                                      // npm
	regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`), // JWT
	regexp.MustCompile(`(hooks\.slack\.com/services/)[A-Za-z0-9/_-]+`),                 // Slack webhooks
	regexp.MustCompile(`\b(?:hvs|hvb|s)\.[A-Za-z0-9]{24,}\b`),                          // Vault tokens
	regexp.MustCompile(`(?i)\b(?:dop|doo|dor)_v1_[a-f0-9]{64}\b`),                      // DigitalOcean
	regexp.MustCompile(`\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}`),                 // SendGrid
}

// progRule is what one program's own flags and arguments hide.
type progRule struct {
	// secretFlags take a secret as the next argument (-a SECRET).
	secretFlags []string
	// attached take a secret attached (sshpass -pSECRET, mysql -pSECRET;
	// for mysql a bare -p prompts, and the next argument is the database).
	attached []string
	// userPass take user<sep>password, attached or next; the password is
	// hidden.
	userPass map[string]string
	// subcommand, when set, must be among the arguments for secretFlags to
	// apply (docker login -p, but docker run -p 8080:80 is a port).
	subcommand string
	// positional returns the indexes of positional arguments to hide.
	positional func(args []string, pos []int) []int
	// rewrite, when set, hides part of each positional argument.
	rewrite func(arg string) string
}

// next says what to do with the argument after a flag.
type next struct {
	hide    bool   // hide it whole
	userSep string // hide what follows this separator in it
}

// flag applies the rule to the flag a; ok is false when the rule has
// nothing to say about it.
func (r *progRule) flag(a string, args []string) (red string, nx next, ok bool) {
	if r == nil || r.subcommand != "" && !hasArg(args, r.subcommand) {
		return "", next{}, false
	}
	for _, f := range r.secretFlags {
		if a == f {
			return a, next{hide: true}, true
		}
	}
	for _, f := range r.attached {
		if strings.HasPrefix(a, f) && len(a) > len(f) {
			return f + Redacted, next{}, true
		}
	}
	for f, sep := range r.userPass {
		switch {
		case a == f:
			return a, next{userSep: sep}, true
		case strings.HasPrefix(a, f+"="):
			return f + "=" + hideAfter(a[len(f)+1:], sep), next{}, true
		case strings.HasPrefix(a, f) && !strings.HasPrefix(f, "--"):
			return f + hideAfter(a[len(f):], sep), next{}, true
		}
	}
	return "", next{}, false
}

func hasArg(args []string, want string) bool {
	for _, a := range args[1:] {
		if strings.EqualFold(a, want) {
			return true
		}
	}
	return false
}

// hidePositional returns the indexes of positional arguments to hide.
func (r *progRule) hidePositional(args []string, pos []int) []int {
	if r == nil || r.positional == nil {
		return nil
	}
	return r.positional(args, pos)
}

// programs maps program names to their rules.
var programs = map[string]*progRule{}

func register(r *progRule, names ...string) {
	for _, n := range names {
		programs[n] = r
	}
}

// indexAfter returns the positional index following the first positional
// equal (case-insensitively) to word, or -1.
func indexAfter(args []string, pos []int, word string, skip int) []int {
	for k, i := range pos {
		if strings.EqualFold(args[i], word) && k+1+skip < len(pos) {
			return []int{pos[k+1+skip]}
		}
	}
	return nil
}

func init() {
	register(&progRule{attached: []string{"-p"}},
		"mysql", "mariadb", "mysqldump", "mariadb-dump", "mysqladmin", "mariadb-admin", "mysqlimport",
		"mysqlshow", "mysqlcheck", "mysqlpump", "mysqlbinlog", "mysqlsh", "mysqlslap")
	register(&progRule{secretFlags: []string{"-a"}, positional: func(args []string, pos []int) []int {
		for k, i := range pos { // AUTH [user] password
			if strings.EqualFold(args[i], "auth") {
				return pos[k+1:]
			}
		}
		return nil
	}}, "redis-cli", "valkey-cli", "keydb-cli")
	register(&progRule{secretFlags: []string{"-p"}, attached: []string{"-p"}}, "sshpass")
	register(&progRule{secretFlags: []string{"-p"}}, "mongo", "mongosh", "mongodump", "mongorestore",
		"mongoexport", "mongoimport", "mongostat", "mongotop", "cqlsh", "rdesktop", "useradd", "usermod")
	register(&progRule{secretFlags: []string{"-P"}}, "sqlcmd", "bcp", "osql", "isql", "ipmitool", "zip", "unzip", "smbpasswd")
	register(&progRule{secretFlags: []string{"-w"}}, "ldapsearch", "ldapadd", "ldapmodify", "ldapdelete",
		"ldapwhoami", "ldappasswd", "ldapcompare", "ldapmodrdn", "ldapexop")
	register(&progRule{secretFlags: []string{"-A", "-X", "-c"}}, "snmpwalk", "snmpget", "snmpset", "snmpbulkwalk", "snmptrap")
	register(&progRule{secretFlags: []string{"-N", "-P"}}, "ssh-keygen")
	register(&progRule{secretFlags: []string{"-k", "-K"}}, "openssl")
	register(&progRule{secretFlags: []string{"-t"}}, "influx")
	register(&progRule{attached: []string{"-p"}}, "7z", "7za", "7zr", "rar", "unrar")
	register(&progRule{secretFlags: []string{"-p"}, subcommand: "login"},
		"docker", "podman", "nerdctl", "buildah", "helm", "oras", "crane", "regctl", "az", "cf", "oc")
	register(&progRule{secretFlags: []string{"-b"},
		userPass: map[string]string{"-u": ":", "-U": ":", "-E": ":", "--cert": ":", "--user": ":", "--proxy-user": ":"}}, "curl")
	register(&progRule{userPass: map[string]string{"-U": "%"}}, "smbclient", "rpcclient", "smbcacls", "smbget", "net", "smbmap")
	register(&progRule{userPass: map[string]string{"-u": ","}}, "lftp")
	register(&progRule{positional: func(args []string, pos []int) []int {
		// htpasswd -b[c] file user password, htpasswd -nb user password
		for _, a := range args[1:] {
			if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.Contains(a, "b") && len(pos) > 0 {
				return pos[len(pos)-1:]
			}
		}
		return nil
	}}, "htpasswd")
	register(&progRule{positional: func(args []string, pos []int) []int {
		// vault login TOKEN (not vault login -method=userpass username=x)
		if len(pos) > 1 && strings.EqualFold(args[pos[0]], "login") && !strings.Contains(args[pos[1]], "=") {
			return pos[1:2]
		}
		return nil
	}}, "vault", "bao")
	register(&progRule{positional: func(args []string, pos []int) []int {
		// rabbitmqctl add_user NAME PASSWORD, change_password NAME PASSWORD
		return append(indexAfter(args, pos, "add_user", 1), indexAfter(args, pos, "change_password", 1)...)
	}}, "rabbitmqctl")
	register(&progRule{positional: func(args []string, pos []int) []int {
		// mc alias set NAME URL ACCESS SECRET, mc config host add NAME URL ACCESS SECRET
		for k := 0; k+1 < len(pos); k++ {
			a, b := strings.ToLower(args[pos[k]]), strings.ToLower(args[pos[k+1]])
			if (a == "alias" && b == "set" || a == "host" && b == "add") && k+5 < len(pos) {
				return pos[k+4 : k+6]
			}
		}
		return nil
	}}, "mc", "mcli")
	register(&progRule{rewrite: func(a string) string {
		return oracleLogin.ReplaceAllString(a, "$1/"+Redacted+"$2") // sqlplus user/password@db
	}}, "sqlplus", "rman", "expdp", "impdp", "exp", "imp", "sqlldr", "dgmgrl")
	register(&progRule{rewrite: func(a string) string {
		if len(a) > 3 && strings.EqualFold(a[:3], "/p:") { // xfreerdp /p:PASSWORD
			return a[:3] + Redacted
		}
		return a
	}}, "xfreerdp", "wlfreerdp", "sdl-freerdp")
}

// oracleLogin is user/password or user/password@db as a whole argument.
var oracleLogin = regexp.MustCompile(`^([^/\s@]+)/[^@\s]+(@\S*)?$`)

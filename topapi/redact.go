package topapi

import (
	"path/filepath"
	"regexp"
	"strings"
)

// Redacted replaces a secret in a redacted command line.
const Redacted = "***"

// Redact returns a copy of a command line with secret-looking values
// replaced by [Redacted]. It errs on the side of hiding too much:
//
//   - the value of a flag whose name has a part such as pass, password, pwd,
//     secret, token, key, auth, cred, credential, jwt, bearer, cookie,
//     session or signature (--password=x, --db-pass x, -Dapp.secret=x,
//     --dbPassword x, -storepass x), even when the value starts with "-";
//     names ending in file, path, dir, url, name, size, type and the like
//     name where or what a secret is and keep their value, and so do
//     negations (--no-auth);
//   - KEY=VALUE, "key": "value", key: value pairs with such a key, alone or
//     inside an argument (env-style arguments, query strings, DSNs, JSON and
//     YAML in argv, Authorization and Cookie header arguments);
//   - URL credentials (postgres://app:***@db), user:***@host (rsync, scp),
//     user/***@db (sqlplus), Bearer/Basic tokens, SQL "IDENTIFIED BY";
//   - the short flags of the tools people run in containers, from a table
//     (mysql -p***, redis-cli -a ***, sshpass -p ***, curl -u user:***,
//     mongo -p, sqlcmd -P, ldapsearch -w, docker login -p, …);
//   - values that look like credentials whatever their flag: AWS access key
//     IDs, GitHub, GitLab, Slack, Stripe and Google API tokens, JWTs,
//     private key blocks;
//   - all of the above inside shell strings (sh -c "…") and after "--".
//
// Only the first [MaxRedactBytes] of a command line are read: an argument
// that goes past them, and every one after it, is shown as [Redacted], so a
// hostile command line cannot make redaction slow.
func Redact(args []string) []string {
	n, budget := len(args), MaxRedactBytes
	for i, a := range args {
		if budget -= len(a); budget < 0 {
			n = i
			break
		}
	}
	out := redactArgs(args[:n], 0)
	for range args[n:] {
		out = append(out, Redacted)
	}
	return out
}

// MaxRedactBytes is how much of a command line [Redact] reads.
const MaxRedactBytes = 32 << 10

// maxDepth bounds how deep shell strings inside shell strings are parsed.
const maxDepth = 2

func redactArgs(args []string, depth int) []string {
	out := make([]string, len(args))
	copy(out, args)
	if len(args) == 0 {
		return out
	}
	prog := progName(args[0])
	rule := programs[prog]
	out[0] = redactText(args[0], depth)
	var positional []int
	var nx next
	for i := 1; i < len(args); i++ {
		a := args[i]
		if pending := nx; pending != (next{}) {
			nx = next{}
			switch {
			case pending.userSep != "" && !strings.HasPrefix(a, "-"):
				out[i] = hideAfter(redactText(a, depth), pending.userSep)
				continue
			case pending.hide && !strings.HasPrefix(a, "--"):
				// "--password -SECRET" hides "-SECRET"; a long flag is
				// taken to be the next flag, not the value.
				out[i] = Redacted
				continue
			}
		}
		if a == "--" && i+1 < len(args) {
			// What follows is often another command line (kubectl exec,
			// docker run … --, env): redact it as one. When it starts with
			// a flag, it is the rest of this one.
			rest := args[i+1:]
			if strings.HasPrefix(rest[0], "-") {
				copy(out[i+1:], redactArgs(append([]string{""}, rest...), depth)[1:])
			} else {
				copy(out[i+1:], redactArgs(rest, depth))
			}
			break
		}
		if !strings.HasPrefix(a, "-") || len(a) < 2 {
			positional = append(positional, i)
			out[i] = redactText(a, depth)
			if rule != nil && rule.rewrite != nil {
				out[i] = rule.rewrite(out[i])
			}
			continue
		}
		if red, n, ok := rule.flag(a, args); ok {
			out[i], nx = red, n
			continue
		}
		name, value, hasValue := strings.Cut(a, "=")
		bare := strings.TrimLeft(name, "-")
		switch {
		case sensitiveName(bare):
			if hasValue {
				out[i] = name + "=" + Redacted
			} else {
				out[i], nx = redactText(a, depth), next{hide: true}
			}
		case userFlags[strings.ToLower(bare)]:
			// --user user:pass (curl, etcdctl, wget): keep the user.
			if hasValue {
				out[i] = name + "=" + hideAfter(value, ":")
			} else {
				nx = next{userSep: ":"}
			}
		case hasValue:
			out[i] = name + "=" + redactText(value, depth)
		default:
			out[i] = redactText(a, depth)
		}
	}
	for _, i := range rule.hidePositional(args, positional) {
		out[i] = Redacted
	}
	for _, i := range hideSetValues(args, positional) {
		out[i] = Redacted
	}
	return out
}

// progName is the lower-case base name of argv[0], as the rules table
// names programs.
func progName(argv0 string) string {
	p := strings.ToLower(filepath.Base(argv0))
	// A process may rewrite argv[0] ("postgres: …", "nginx: master"): the
	// first word is the program.
	if i := strings.IndexAny(p, ": "); i > 0 {
		p = p[:i]
	}
	return p
}

// hideAfter returns v with the part after the first sep hidden, when there
// is such a part ("bob:pw" → "bob:***"); a numeric part (uid:gid) and a URL
// (its credentials are redactText's) stay.
func hideAfter(v, sep string) string {
	user, pass, ok := strings.Cut(v, sep)
	if !ok || pass == "" || pass == Redacted || strings.Trim(pass, "0123456789") == "" || strings.Contains(v, "://") {
		return v
	}
	return user + sep + Redacted
}

// hideSetValues finds "set KEY VALUE" and "config KEY VALUE" among the
// positional arguments (aws configure set, npm config set, redis CONFIG SET,
// git config) and bare secret words followed by a value ("password X", as in
// nmcli), and returns the indexes of the values to hide.
func hideSetValues(args []string, pos []int) []int {
	var out []int
	for k := 0; k+1 < len(pos); k++ {
		w := strings.ToLower(args[pos[k]])
		switch {
		case (w == "set" || w == "config") && k+2 < len(pos) && sensitiveName(args[pos[k+1]]):
			out = append(out, pos[k+2])
		case secretWords[w]:
			out = append(out, pos[k+1])
		}
	}
	return out
}

// redactText hides secrets inside one argument (or any string): credentials
// in URLs, key=value and key: value pairs, JSON, header values, auth
// schemes, token shapes; an argument with blanks is also parsed as a shell
// command line.
func redactText(s string, depth int) string {
	if s == "" || s == Redacted {
		return s
	}
	if privateKeyBlock.MatchString(s) {
		return Redacted
	}
	if strings.Contains(s, "://") {
		s = urlPassword.ReplaceAllString(s, "$1$2:"+Redacted+"@")
		s = urlTokenUser.ReplaceAllString(s, "$1"+Redacted+"@")
	}
	if strings.Contains(s, "@") {
		s = userPassAt.ReplaceAllStringFunc(s, func(m string) string {
			sm := userPassAt.FindStringSubmatch(m)
			if strings.HasPrefix(strings.ToLower(sm[4]), "sha") || sm[3] == Redacted {
				return m // an image digest (nginx:1.25@sha256:…)
			}
			return sm[1] + sm[2] + ":" + Redacted + "@" + sm[4]
		})
		s = oracleJDBC.ReplaceAllString(s, "$1/"+Redacted+"@")
	}
	s = cookieHeader.ReplaceAllString(s, "$1$2"+Redacted)
	s = sqlPassword.ReplaceAllString(s, "$1 "+Redacted)
	s = redactPairs(s)
	s = authScheme.ReplaceAllString(s, "$1$2"+Redacted)
	for _, re := range tokenShapes {
		s = re.ReplaceAllString(s, "${1}"+Redacted)
	}
	if depth < maxDepth && strings.ContainsAny(s, " \t\n") {
		s = redactShell(s, depth+1)
	}
	return s
}

var (
	// scheme://user:pass@ (user may be empty, as in redis://:pass@).
	urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^/\s:@'"]*):([^@/\s'"]*)@`)
	// scheme://TOKEN@: a long user part is a token (https://ghp_…@github.com).
	urlTokenUser = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^/\s:@'"*]{16,})@`)
	// user:pass@host without a scheme (rsync, scp, sqlplus-style DSNs).
	userPassAt = regexp.MustCompile(`(^|[\s'"=,(])([A-Za-z0-9._%+-]+):([^@\s/:'"]+)@([A-Za-z0-9\[][A-Za-z0-9.:\[\]-]*)`)
	// jdbc:oracle:thin:user/pass@host
	oracleJDBC = regexp.MustCompile(`(jdbc:oracle:[a-z0-9]+:[^/@\s:]*)/[^@\s]+@`)
	// Cookie headers: every pair is a secret, up to the end.
	cookieHeader = regexp.MustCompile(`(?i)\b((?:set-)?cookie)(\s*:\s*)[^\s'"][^'"\n]*`)
	// SQL in argv: IDENTIFIED BY 'pw', PASSWORD 'pw'.
	sqlPassword = regexp.MustCompile(`(?i)\b(identified\s+by|password)\s+('[^']*'|"[^"]*"|[^\s'";,)]+)`)
	// Authorization schemes followed by their credential.
	authScheme = regexp.MustCompile(`(?i)\b(bearer|basic|token|digest)(\s+)[A-Za-z0-9._~+/=:-]+`)
	// -----BEGIN … PRIVATE KEY----- anywhere hides the whole argument.
	privateKeyBlock = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY`)
)

// pairKey finds the keys of key=value and key: value pairs; valueEq and
// valueColon match a value right after the separator.
var (
	pairKey    = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_.\-]*`)
	valueEq    = regexp.MustCompile(`^(?:"(?:[^"\\]|\\.)*"|'[^']*'|\{[^}]*\}|[^\s&;,'"]*)`)
	valueColon = regexp.MustCompile(`^(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^,;}\]\n'"]*)`)
)

// redactPairs hides the values of pairs with a secret-looking key:
// PASSWORD=x, ?token=x&, password='a b', PWD={x}, "password": "x",
// password: x, Authorization: Bearer x. A colon pair counts only when it
// looks like JSON (quoted key), YAML (blank after the colon) or a header, so
// /run/secrets:/x and user:pass stay paths and logins. A key that does not
// count is stepped over, so that a pair inside its value is found
// (--from-literal=password=x). Values are matched only after a secret key,
// so the scan stays linear in the length of s.
func redactPairs(s string) string {
	if !strings.ContainsAny(s, "=:") {
		return s
	}
	var b strings.Builder
	pos := 0
	for pos < len(s) {
		loc := pairKey.FindStringIndex(s[pos:])
		if loc == nil {
			break
		}
		keyEnd := pos + loc[1]
		key := s[pos+loc[0] : keyEnd]
		b.WriteString(s[pos:keyEnd])
		pos = keyEnd
		if !sensitiveName(key) {
			continue
		}
		// An optional closing quote, blanks, the separator, blanks.
		i := keyEnd
		quoted := i < len(s) && (s[i] == '"' || s[i] == '\'')
		if quoted {
			i++
		}
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) || s[i] != '=' && s[i] != ':' {
			continue
		}
		sep := s[i]
		i++
		blank := i < len(s) && (s[i] == ' ' || s[i] == '\t')
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		val := valueEq
		if sep == ':' {
			k := strings.ToLower(key)
			if !quoted && !blank && !strings.Contains(k, "-") && k != "authorization" && k != "cookie" {
				continue
			}
			val = valueColon
		}
		n := len(val.FindString(s[i:]))
		if v := s[i : i+n]; v == "" || v == Redacted {
			continue
		}
		b.WriteString(s[keyEnd:i])
		b.WriteString(Redacted)
		pos = i + n
	}
	b.WriteString(s[pos:])
	return b.String()
}

// redactShell parses s as a shell command line (words, quotes, && ; |) and
// redacts each command in it as Redact would.
func redactShell(s string, depth int) string {
	words := shellWords(s)
	if len(words) < 2 {
		return s
	}
	var b strings.Builder
	last := 0
	for start := 0; start < len(words); {
		end := start
		for end < len(words) && !words[end].op {
			end++
		}
		argv := make([]string, end-start)
		for i, w := range words[start:end] {
			argv[i] = w.text
		}
		for i, red := range redactArgs(argv, depth) {
			w := words[start+i]
			if red == w.text {
				continue
			}
			b.WriteString(s[last:w.start])
			if q := s[w.start]; (q == '\'' || q == '"') && !strings.ContainsRune(red, rune(q)) {
				red = string(q) + red + string(q)
			}
			b.WriteString(red)
			last = w.end
		}
		start = end + 1
	}
	b.WriteString(s[last:])
	return b.String()
}

// shellWord is one word of a shell command line, unquoted, with its span.
type shellWord struct {
	text       string
	start, end int
	op         bool // a control operator: ; & | && || or a newline
}

// shellWords splits s like a POSIX shell would into words, without
// expansions: quotes group and are removed, a backslash escapes.
func shellWords(s string) []shellWord {
	var out []shellWord
	var cur strings.Builder
	start, in := -1, false
	flush := func(end int) {
		if in {
			out = append(out, shellWord{text: cur.String(), start: start, end: end})
			cur.Reset()
			in = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			flush(i)
		case c == '\n' || c == ';' || c == '&' || c == '|':
			flush(i)
			j := i + 1
			if j < len(s) && (c == '&' || c == '|') && s[j] == c {
				j++
			}
			out = append(out, shellWord{text: s[i:j], start: i, end: j, op: true})
			i = j - 1
		default:
			if !in {
				start, in = i, true
			}
			switch c {
			case '\'':
				j := strings.IndexByte(s[i+1:], '\'')
				if j < 0 {
					j = len(s) - i - 1
				}
				cur.WriteString(s[i+1 : i+1+j])
				i += j + 1
			case '"':
				j := i + 1
				for ; j < len(s) && s[j] != '"'; j++ {
					if s[j] == '\\' && j+1 < len(s) {
						j++
					}
					cur.WriteByte(s[j])
				}
				i = j
			case '\\':
				if i+1 < len(s) {
					i++
					cur.WriteByte(s[i])
				}
			default:
				cur.WriteByte(c)
			}
		}
	}
	flush(len(s))
	return out
}

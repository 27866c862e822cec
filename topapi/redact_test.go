package topapi

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"flag with equals", "app --password=hunter2 --port=80", "app --password=*** --port=80"},
		{"single dash", "app -password=hunter2", "app -password=***"},
		{"flag then value", "app --token abc123 -v", "app --token *** -v"},
		{"component match", "app --db-pass x --api-key=y --client_secret z", "app --db-pass *** --api-key=*** --client_secret ***"},
		{"camel case", "app --dbPassword=x", "app --dbPassword=***"},
		{"java property", "java -Dspring.datasource.password=x -jar a.jar", "java -Dspring.datasource.password=*** -jar a.jar"},
		{"bare key=value", "env TOKEN=abc AWS_SECRET_ACCESS_KEY=def PATH=/bin cmd", "env TOKEN=*** AWS_SECRET_ACCESS_KEY=*** PATH=/bin cmd"},
		{"url credentials", "psql postgres://app:pw@db:5432/x", "psql postgres://app:***@db:5432/x"},
		{"url query", "curl https://h/x?token=abc&a=1", "curl https://h/x?token=***&a=1"},
		{"curl user", "curl -u bob:pw https://h/", "curl -u bob:*** https://h/"},
		{"mysql -p", "mysql -uroot -psecretpw db", "mysql -uroot -p*** db"},
		{"sshpass", "sshpass -p pw ssh host", "sshpass -p *** ssh host"},
		{"file flags kept", "app --token-file /run/tok --key-file /k.pem", "app --token-file /run/tok --key-file /k.pem"},
		{"boolean flag followed by flag", "app --no-auth --verbose", "app --no-auth --verbose"},
		{"flag at end", "app --password", "app --password"},
		{"harmless", "nginx -g daemon off; -c /etc/nginx.conf", "nginx -g daemon off; -c /etc/nginx.conf"},
		{"keyboard is not a key", "app --keyboard us --bypass yes", "app --keyboard us --bypass yes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Split(tt.in, " ")
			got := strings.Join(Redact(in), " ")
			if got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactInsideShellString(t *testing.T) {
	in := []string{"sh", "-c", "mysqladmin --password hunter2 -h db && curl -H 'Authorization: Bearer xyz' http://u:p@h/"}
	got := Redact(in)[2]
	for _, secret := range []string{"hunter2", "xyz", "u:p@"} {
		if strings.Contains(got, secret) {
			t.Errorf("Redact(%q) = %q, still contains %q", in[2], got, secret)
		}
	}
}

func TestRedactDoesNotModifyInput(t *testing.T) {
	in := []string{"app", "--password=x"}
	Redact(in)
	if in[1] != "--password=x" {
		t.Errorf("Redact modified its input: %q", in)
	}
}

func TestRedactAuthHeaderArgument(t *testing.T) {
	in := []string{"curl", "-H", "Authorization: Bearer xyz", "-H", "X-Api-Key: k", "https://h/"}
	want := []string{"curl", "-H", "Authorization: ***", "-H", "X-Api-Key: ***", "https://h/"}
	if got := Redact(in); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Redact(%q) = %q, want %q", in, got, want)
	}
}

package auth_test

import (
	"context"
	"testing"
)

// BenchmarkAuthenticate measures per-request authentication once credentials are warm:
// a JWT (signature, claims, cached user and session), a cached Basic credential, an API key.
func BenchmarkAuthenticate(b *testing.B) {
	f := setupB(b)
	ctx := context.Background()
	tok, err := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if err != nil {
		b.Fatal(err)
	}
	cases := map[string]string{"jwt": "Bearer " + tok.AccessToken, "basic": basic("ada", "ada-password")}
	for name, h := range cases {
		b.Run(name, func(b *testing.B) {
			if _, err := f.svc.Authenticate(ctx, h, ""); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.svc.Authenticate(ctx, h, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

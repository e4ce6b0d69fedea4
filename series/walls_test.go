package series_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/series"
)

// Every operation, by every identity: who may, who gets 401, 403 or 404, and that a
// refused operation changes nothing. Read operations answer every member and key of the
// tenant; writes need write (devices, readings) or admin (credentials, keys, settings).
func TestTenantWalls(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{})
	w := e.w
	fresh := func() string {
		d, _, _ := e.device(climate("wall"))
		return d.ID
	}
	now := time.Now().UTC().Format(time.RFC3339)
	type op struct {
		name  string
		write int // 0 read, 1 write, 2 admin
		run   func(ctx context.Context, tenant, device string) error
	}
	ops := []op{
		{"DeviceCreate", 1, func(ctx context.Context, ten, _ string) error {
			_, _, err := e.svc.DeviceCreate(ctx, ten, climate("new"))
			return err
		}},
		{"DeviceGet", 0, func(ctx context.Context, ten, d string) error { _, err := e.svc.DeviceGet(ctx, ten, d); return err }},
		{"DeviceList", 0, func(ctx context.Context, ten, _ string) error { _, err := e.svc.DeviceList(ctx, ten, nil); return err }},
		{"DeviceUpdate", 1, func(ctx context.Context, ten, d string) error {
			name := "renamed"
			_, err := e.svc.DeviceUpdate(ctx, ten, d, series.DeviceUpdate{Name: &name})
			return err
		}},
		{"DeviceDelete", 1, func(ctx context.Context, ten, d string) error { return e.svc.DeviceDelete(ctx, ten, d) }},
		{"DeviceCredentialsRotate", 2, func(ctx context.Context, ten, d string) error {
			_, err := e.svc.DeviceCredentialsRotate(ctx, ten, d, nil)
			return err
		}},
		{"KeyCreate (device)", 2, func(ctx context.Context, ten, d string) error {
			_, _, err := e.svc.KeyCreate(ctx, ten, series.KeyInput{DeviceID: d})
			return err
		}},
		{"KeyCreate (tenant-wide)", 2, func(ctx context.Context, ten, _ string) error {
			_, _, err := e.svc.KeyCreate(ctx, ten, series.KeyInput{})
			return err
		}},
		{"KeyList", 0, func(ctx context.Context, ten, d string) error { _, err := e.svc.KeyList(ctx, ten, d); return err }},
		{"KeyRetire", 2, func(ctx context.Context, ten, d string) error {
			ks, err := e.svc.KeyList(w.As(testworld.Owner), w.Tenant, d)
			if err != nil || len(ks) == 0 {
				return errors.New("no key to retire")
			}
			return e.svc.KeyRetire(ctx, ten, ks[0].ID, 0)
		}},
		{"LatestDevice", 0, func(ctx context.Context, ten, d string) error { _, err := e.svc.LatestDevice(ctx, ten, d); return err }},
		{"LatestTenant", 0, func(ctx context.Context, ten, _ string) error { _, err := e.svc.LatestTenant(ctx, ten); return err }},
		{"History", 0, func(ctx context.Context, ten, d string) error {
			_, err := e.svc.History(ctx, ten, d, series.HistoryQuery{})
			return err
		}},
		{"Subscribe (device)", 0, func(ctx context.Context, ten, d string) error {
			sub, err := e.svc.Subscribe(ctx, ten, d)
			if err == nil {
				sub.Close()
			}
			return err
		}},
		{"Subscribe (tenant)", 0, func(ctx context.Context, ten, _ string) error {
			sub, err := e.svc.Subscribe(ctx, ten, "")
			if err == nil {
				sub.Close()
			}
			return err
		}},
		{"Ingest", 1, func(ctx context.Context, ten, d string) error {
			res, err := e.svc.Ingest(ctx, ten, items(t, `{"device_id":"`+d+`","timestamp":"`+now+`","values":{"temperature":20}}`), nil)
			if err == nil && res.Accepted != 1 {
				return problem.NotFound("device_not_found", "rejected as %v", res.Rejected)
			}
			return err
		}},
		{"Stats", 0, func(ctx context.Context, ten, _ string) error { _, err := e.svc.Stats(ctx, ten); return err }},
		{"Rejects", 0, func(ctx context.Context, ten, _ string) error { _, err := e.svc.Rejects(ctx, ten, nil); return err }},
		{"SettingsGet", 0, func(ctx context.Context, ten, _ string) error { _, err := e.svc.SettingsGet(ctx, ten); return err }},
		{"SettingsUpdate", 2, func(ctx context.Context, ten, _ string) error {
			ttl := 600
			_, err := e.svc.SettingsUpdate(ctx, ten, series.SettingsInput{FernetTTLSeconds: &ttl})
			return err
		}},
	}
	// What each identity may do in the world's tenant: the level it reaches.
	level := map[string]int{testworld.Owner: 2, testworld.Admin: 2, testworld.Platform: 2,
		testworld.Member: 0, testworld.Viewer: 0, testworld.APIKey: 0}
	for _, o := range ops {
		for _, role := range testworld.Roles() {
			d := fresh()
			err := o.run(w.As(role), w.Tenant, d)
			var want error
			switch {
			case role == "":
				want = problem.ErrUnauthenticated
			case role == testworld.Outsider:
				want = problem.ErrNotFound
			case o.write > level[role]:
				want = problem.ErrForbidden
			}
			if want == nil && err != nil || want != nil && !errors.Is(err, want) {
				t.Errorf("%s as %q: %v, want %v", o.name, role, err, want)
			}
		}
		// The outsider, in their own tenant, naming this tenant's device: 404, never its data.
		if o.name == "DeviceCreate" || o.name == "DeviceList" || o.name == "LatestTenant" || o.name == "Stats" ||
			o.name == "Rejects" || o.name == "SettingsGet" || o.name == "SettingsUpdate" || o.name == "KeyCreate (tenant-wide)" ||
			o.name == "Subscribe (tenant)" {
			continue
		}
		d := fresh()
		if err := o.run(w.As(testworld.Outsider), w.Other, d); !errors.Is(err, problem.ErrNotFound) {
			t.Errorf("%s by the outsider through their own tenant: %v, want 404", o.name, err)
		}
	}
	// The outsider's tenant-wide views never show this tenant's devices.
	if l, err := e.svc.LatestTenant(w.As(testworld.Outsider), w.Other); err != nil || len(l) != 0 {
		t.Errorf("the outsider's tenant lists %d devices: %v", len(l), err)
	}
	// A grant of write on one device lets a member change and feed that device only.
	d1, d2 := fresh(), fresh()
	if _, _, err := w.Auth.GrantCreate(w.As(testworld.Owner), w.Tenant, auth.GrantInput{UserID: w.UserIDs[testworld.Member],
		Resource: "device:" + d1, Permission: "write"}); err != nil {
		t.Fatal(err)
	}
	name := "granted"
	if _, err := e.svc.DeviceUpdate(w.As(testworld.Member), w.Tenant, d1, series.DeviceUpdate{Name: &name}); err != nil {
		t.Errorf("member with a grant: %v", err)
	}
	if _, err := e.svc.DeviceUpdate(w.As(testworld.Member), w.Tenant, d2, series.DeviceUpdate{Name: &name}); !errors.Is(err, problem.ErrForbidden) {
		t.Errorf("member on another device: %v", err)
	}
	// Refused operations changed nothing: only the devices this test made exist, and only
	// the granted rename happened.
	if n := count(t, e, `SELECT count(*) FROM strata.devices WHERE name = 'renamed' AND tenant_id = $1`, w.Tenant); n != 3 {
		t.Errorf("%d devices renamed, want 3 (owner, admin, platform)", n)
	}
}

package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/preboot/preboot/store"
)

const siteCols = `id, name, subnets, server_url, pin, created_at, updated_at`

func scanSite(r scanner) (store.Site, error) {
	var s store.Site
	var subnets string
	var created, updated int64
	if err := r.Scan(&s.ID, &s.Name, &subnets, &s.ServerURL, &s.Pin, &created, &updated); err != nil {
		return store.Site{}, err
	}
	var ps []string
	if err := json.Unmarshal([]byte(subnets), &ps); err != nil {
		return store.Site{}, fmt.Errorf("site %s: subnets: %w", s.Name, err)
	}
	s.Subnets = make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return store.Site{}, fmt.Errorf("site %s: subnet: %w", s.Name, err)
		}
		s.Subnets = append(s.Subnets, pfx)
	}
	s.CreatedAt, s.UpdatedAt = fromMicros(created), fromMicros(updated)
	return s, nil
}

// CreateSite implements store.Store.
func (s *Store) CreateSite(ctx context.Context, site store.Site) (store.Site, error) {
	site.Subnets = append([]netip.Prefix(nil), site.Subnets...)
	if err := store.CheckSite(&site); err != nil {
		return store.Site{}, fmt.Errorf("create site: %w", err)
	}
	ps := make([]string, len(site.Subnets))
	for i, p := range site.Subnets {
		ps[i] = p.String()
	}
	subnets, err := json.Marshal(ps)
	if err != nil {
		return store.Site{}, err
	}
	site.CreatedAt = now()
	site.UpdatedAt = site.CreatedAt
	err = s.dbErr(s.r().queryRow(ctx, `INSERT INTO sites (name, subnets, server_url, pin, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
		site.Name, string(subnets), site.ServerURL, site.Pin, micros(site.CreatedAt), micros(site.UpdatedAt)).Scan(&site.ID))
	if err != nil {
		return store.Site{}, fmt.Errorf("create site %q: %w", site.Name, err)
	}
	return site, nil
}

// Sites implements store.Store, by name.
func (s *Store) Sites(ctx context.Context) ([]store.Site, error) {
	rows, err := s.r().query(ctx, `SELECT `+siteCols+` FROM sites ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	defer rows.Close()
	out := []store.Site{}
	for rows.Next() {
		site, err := scanSite(rows)
		if err != nil {
			return nil, fmt.Errorf("list sites: %w", err)
		}
		out = append(out, site)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	return out, nil
}

// DeleteSite implements store.Store.
func (s *Store) DeleteSite(ctx context.Context, name string) error {
	n, err := s.r().affected(ctx, `DELETE FROM sites WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete site %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("delete site %s: %w", name, store.ErrNotFound)
	}
	return nil
}

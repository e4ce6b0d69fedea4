package queue

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"
)

// groupLockClass is the first key of FIFO groups' advisory locks (the two-key form, apart
// from every one-key lock): "QGRP".
const groupLockClass int32 = 0x51475250

// lockGroups takes the transaction-scoped locks of a queue's FIFO groups, in a fixed
// order so two transactions never wait on each other in a cycle. Pushes and finishes of
// a group hold it, so exactly one job per group is runnable or running at a time.
func lockGroups(ctx context.Context, tx pgx.Tx, queueID int64, groups []string) error {
	queues := make([]int64, len(groups))
	for i := range queues {
		queues[i] = queueID
	}
	return lockGroupPairs(ctx, tx, queues, groups)
}

// lockGroupPairs locks the groups (queues[i], groups[i]).
func lockGroupPairs(ctx context.Context, tx pgx.Tx, queues []int64, groups []string) error {
	_, err := tx.Exec(ctx, `SELECT count(pg_advisory_xact_lock($1, hashtext(q::text || '/' || g)))
		FROM (SELECT DISTINCT q, g FROM unnest($2::bigint[], $3::text[]) AS u(q, g) ORDER BY q, g) s`,
		groupLockClass, queues, groups)
	return err
}

// promote makes the oldest job of each given group runnable when none of the group is
// runnable or running, and notifies the queues concerned. The groups' locks must be held.
func promote(ctx context.Context, tx pgx.Tx, queues []int64, groups []string) (int, error) {
	if len(queues) == 1 && len(groups) > 1 {
		for len(queues) < len(groups) {
			queues = append(queues, queues[0])
		}
	}
	tag, err := tx.Exec(ctx, `WITH heads AS (
			SELECT min(j.id) AS id FROM jobs j
			JOIN (SELECT DISTINCT q, g FROM unnest($1::bigint[], $2::text[]) AS u(q, g)) s ON j.queue_id = s.q AND j.group_key = s.g
			GROUP BY j.queue_id, j.group_key
			HAVING bool_and(j.state = 'blocked')
		), promoted AS (
			UPDATE jobs j SET state = 'available' FROM heads WHERE j.id = heads.id RETURNING j.queue_id
		)
		SELECT pg_notify($3, p.queue_id || ':' || q.name)
		FROM (SELECT DISTINCT queue_id FROM promoted) p JOIN queues q ON q.id = p.queue_id`,
		queues, groups, channelJobs)
	return int(tag.RowsAffected()), err
}

// uniqueGroups returns the sorted distinct (queue, group) pairs of jobs that had a group.
func uniqueGroups(queues []int64, groups []*string) ([]int64, []string) {
	type pair struct {
		q int64
		g string
	}
	var ps []pair
	for i, g := range groups {
		if g != nil {
			ps = append(ps, pair{queues[i], *g})
		}
	}
	slices.SortFunc(ps, func(a, b pair) int {
		if a.q != b.q {
			if a.q < b.q {
				return -1
			}
			return 1
		}
		switch {
		case a.g < b.g:
			return -1
		case a.g > b.g:
			return 1
		}
		return 0
	})
	ps = slices.Compact(ps)
	qs, gs := make([]int64, len(ps)), make([]string, len(ps))
	for i, p := range ps {
		qs[i], gs[i] = p.q, p.g
	}
	return qs, gs
}

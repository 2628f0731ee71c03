package client

import (
	"context"
	"net/http"
)

// Progress is the value of a task's progress key: the server keeps, among
// concurrent writes, the one with the largest Progress.
type Progress struct {
	// Progress is a percentage, 0 to 100.
	Progress float64 `json:"progress"`
	// Status says what the task is doing.
	Status string `json:"status"`
}

// The Sync* calls are plain writes without a context: concurrent writes by
// several workers are kept as siblings and resolved on read by the key's
// strategy (last write wins for state, the largest progress for progress, a
// deep merge for agents and coordination), which is what the design
// document asks of them. To replace what others wrote, write with the
// version you read (WithContext) or use Update.

// SyncTaskState writes the state of task taskID (tasks/{id}/state, last
// write wins).
func (c *Client) SyncTaskState(ctx context.Context, taskID string, state any, opts ...PutOption) (*Entry, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	return c.putEntry(ctx, pathOf("v1/tasks", taskID, "state"), state, opts)
}

// TaskState reads the state of task taskID. It returns ErrNotFound when
// there is none.
func (c *Client) TaskState(ctx context.Context, taskID string, opts ...GetOption) (*Entry, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	return c.getEntry(ctx, pathOf("v1/tasks", taskID, "state"), opts)
}

// SyncTaskProgress writes the progress of task taskID as
// {"progress": progress, "status": status} (tasks/{id}/progress). Among
// concurrent writes the largest progress wins; a progress outside 0..100 is
// ErrInvalid.
func (c *Client) SyncTaskProgress(ctx context.Context, taskID string, progress float64, status string, opts ...PutOption) (*Entry, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	return c.putEntry(ctx, pathOf("v1/tasks", taskID, "progress"), Progress{Progress: progress, Status: status}, opts)
}

// TaskProgress reads the progress of task taskID; decode it into a
// Progress. It returns ErrNotFound when there is none.
func (c *Client) TaskProgress(ctx context.Context, taskID string, opts ...GetOption) (*Entry, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	return c.getEntry(ctx, pathOf("v1/tasks", taskID, "progress"), opts)
}

// SyncAgentCoordination writes the coordination data of agent agentID on
// task taskID (tasks/{id}/agents/{agentId}; concurrent writes are
// deep-merged).
func (c *Client) SyncAgentCoordination(ctx context.Context, taskID, agentID string, data any, opts ...PutOption) (*Entry, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	if err := checkName("agent id", agentID); err != nil {
		return nil, err
	}
	return c.putEntry(ctx, pathOf("v1/tasks", taskID, "agents", agentID), data, opts)
}

// AgentCoordination reads the coordination data of agent agentID on task
// taskID. It returns ErrNotFound when there is none.
func (c *Client) AgentCoordination(ctx context.Context, taskID, agentID string, opts ...GetOption) (*Entry, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	if err := checkName("agent id", agentID); err != nil {
		return nil, err
	}
	return c.getEntry(ctx, pathOf("v1/tasks", taskID, "agents", agentID), opts)
}

// Agent is one agent of a task with its coordination data.
type Agent struct {
	ID    string `json:"id"`
	Entry Entry  `json:"entry"`
}

// TaskAgents lists the agents of task taskID that have coordination data,
// sorted by id; none is an empty list, not an error.
func (c *Client) TaskAgents(ctx context.Context, taskID string) ([]Agent, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	var out struct {
		Agents []Agent `json:"agents"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/tasks", taskID, "agents")}, &out); err != nil {
		return nil, err
	}
	return out.Agents, nil
}

// SyncQueue writes the shared task queue (coordination/queue), by the
// design document {"pending": [...], "processing": [...]}. Concurrent
// writes are deep-merged and arrays inside them unioned, so a plain write
// can add to a list but never remove from it: take items out with Update.
func (c *Client) SyncQueue(ctx context.Context, queue any, opts ...PutOption) (*Entry, error) {
	return c.putEntry(ctx, "/v1/coordination/queue", queue, opts)
}

// Queue reads the shared task queue. It returns ErrNotFound when there is
// none.
func (c *Client) Queue(ctx context.Context, opts ...GetOption) (*Entry, error) {
	return c.getEntry(ctx, "/v1/coordination/queue", opts)
}

// SyncAssignments writes the worker-task assignments
// (coordination/assignments; concurrent writes are deep-merged).
func (c *Client) SyncAssignments(ctx context.Context, assignments any, opts ...PutOption) (*Entry, error) {
	return c.putEntry(ctx, "/v1/coordination/assignments", assignments, opts)
}

// Assignments reads the worker-task assignments. It returns ErrNotFound when
// there are none.
func (c *Client) Assignments(ctx context.Context, opts ...GetOption) (*Entry, error) {
	return c.getEntry(ctx, "/v1/coordination/assignments", opts)
}

// SyncMetrics writes the shared performance metrics (coordination/metrics;
// concurrent writes are deep-merged).
func (c *Client) SyncMetrics(ctx context.Context, metrics any, opts ...PutOption) (*Entry, error) {
	return c.putEntry(ctx, "/v1/coordination/metrics", metrics, opts)
}

// Metrics reads the shared performance metrics. It returns ErrNotFound when
// there are none.
func (c *Client) Metrics(ctx context.Context, opts ...GetOption) (*Entry, error) {
	return c.getEntry(ctx, "/v1/coordination/metrics", opts)
}

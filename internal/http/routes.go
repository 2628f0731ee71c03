package http

import "net/http"

// routes lists the whole API. Keep it in step with api/openapi.yaml: the
// spec test fails on any route or response the spec does not describe.
func (s *Server) routes() {
	r := s.router
	r.Use(s.observe, s.recoverer, s.authenticate, s.limitBody)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeError(w, r, s.log, errRouteNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeError(w, r, s.log, errMethod) })
	log, cfg, st, lk, ws := s.log, s.cfg, s.store, s.locker, s.prop.watches

	r.Get("/healthz", handleHealth())
	r.Get("/readyz", handleReady(log, st))
	r.Get("/openapi.yaml", handleSpec(cfg.Spec))
	r.Get("/metrics", handleMetrics(log, cfg.Metrics))
	r.Get("/v1/stats", handleStats(log, cfg.Stats))

	// Generic keys.
	r.Get("/v1/kv/*", handleKVGet(log, cfg, st, ws, wildcardKey))
	r.Put("/v1/kv/*", handleKVPut(log, cfg, st, wildcardKey))
	r.Patch("/v1/kv/*", handleKVPatch(log, cfg, st, wildcardKey))
	r.Delete("/v1/kv/*", handleKVDelete(log, cfg, st, wildcardKey))
	r.Get("/v1/keys", handleKeys(log, cfg, st))
	r.Delete("/v1/keys", handleKeysDelete(log, cfg, st))

	// Batches and queued writes (PUT ?async=true on every key route).
	r.Post("/v1/batch", handleBatch(log, cfg, st))
	r.Post("/v1/sync", handleSync(log, cfg.Queue))

	// Locks; "refresh" is reserved as a lock name's last segment.
	r.Post("/v1/locks/*", handleLockPost(log, cfg, lk))
	r.Get("/v1/locks/*", handleLockHolder(log, cfg, lk, wildcardLock(false)))
	r.Delete("/v1/locks/*", handleLockRelease(log, cfg, lk, wildcardLock(false)))
	r.Get("/v1/locks", handleLocks(log, cfg, lk))
	r.Post("/v1/semaphores/*", handleSemaphorePost(log, cfg, lk))
	r.Get("/v1/semaphores/*", handleSemaphore(log, cfg, lk))
	r.Delete("/v1/semaphores/*", handleSemaphoreRelease(log, cfg, lk))
	r.Get("/v1/semaphores", handleSemaphores(log, cfg, lk))
	r.Post("/v1/queues/{queue}/messages", handleEnqueue(log, cfg))
	r.Post("/v1/queues/{queue}/claim", handleClaim(log, cfg))
	r.Delete("/v1/queues/{queue}/messages/{id}", handleAck(log, cfg))
	r.Post("/v1/queues/{queue}/messages/{id}/release", handleQueueRelease(log, cfg))
	r.Post("/v1/queues/{queue}/messages/{id}/extend", handleExtend(log, cfg))
	r.Get("/v1/queues/{queue}", handleQueueStats(log, cfg))
	r.Delete("/v1/queues/{queue}", handlePurge(log, cfg))
	r.Get("/v1/queues", handleQueues(log, cfg))
	r.Get("/v1/queues/{queue}/dead", handleDeadLetters(log, cfg))
	r.Post("/v1/queues/{queue}/redrive", handleRedrive(log, cfg))
	r.Delete("/v1/queues/{queue}/dead/{id}", handleDropDead(log, cfg))
	r.Post("/v1/counters/*", handleCounterAdd(log, cfg))
	r.Put("/v1/counters/*", handleCounterSet(log, cfg))
	r.Get("/v1/counters/*", handleCounterGet(log, cfg))
	r.Delete("/v1/counters/*", handleCounterDelete(log, cfg))
	r.Get("/v1/counters", handleCounters(log, cfg))
	r.Post("/v1/barriers/*", handleArrive(log, cfg))
	r.Get("/v1/barriers/*", handleBarrier(log, cfg))
	r.Delete("/v1/barriers/*", handleBarrierReset(log, cfg))
	r.Get("/v1/barriers", handleBarriers(log, cfg))

	// The seed's typed API (CONTRACT §6): the same bodies as /v1/kv for
	// their key.
	r.Get("/v1/tasks/{id}/state", handleKVGet(log, cfg, st, ws, templateKey("tasks/{id}/state")))
	r.Put("/v1/tasks/{id}/state", handleKVPut(log, cfg, st, templateKey("tasks/{id}/state")))
	r.Patch("/v1/tasks/{id}/state", handleKVPatch(log, cfg, st, templateKey("tasks/{id}/state")))
	r.Get("/v1/tasks/{id}/progress", handleKVGet(log, cfg, st, ws, templateKey("tasks/{id}/progress")))
	r.Put("/v1/tasks/{id}/progress", handleKVPut(log, cfg, st, templateKey("tasks/{id}/progress")))
	r.Patch("/v1/tasks/{id}/progress", handleKVPatch(log, cfg, st, templateKey("tasks/{id}/progress")))
	r.Post("/v1/tasks/{id}/lock", handleLockAcquire(log, cfg, lk, taskLock))
	r.Post("/v1/tasks/{id}/lock/refresh", handleLockRefresh(log, cfg, lk, taskLock))
	r.Get("/v1/tasks/{id}/lock", handleLockHolder(log, cfg, lk, taskLock))
	r.Delete("/v1/tasks/{id}/lock", handleLockRelease(log, cfg, lk, taskLock))
	r.Get("/v1/tasks/{id}/agents", handleTaskAgents(log, cfg, st))
	r.Get("/v1/tasks/{id}/agents/{agent}", handleKVGet(log, cfg, st, ws, templateKey("tasks/{id}/agents/{agent}")))
	r.Put("/v1/tasks/{id}/agents/{agent}", handleKVPut(log, cfg, st, templateKey("tasks/{id}/agents/{agent}")))
	r.Patch("/v1/tasks/{id}/agents/{agent}", handleKVPatch(log, cfg, st, templateKey("tasks/{id}/agents/{agent}")))

	r.Get("/v1/workers", handleWorkers(log, cfg, st))
	r.Put("/v1/workers/{id}/heartbeat", handleHeartbeat(log, cfg, st))
	for _, k := range []string{"status", "capacity"} {
		r.Get("/v1/workers/{id}/"+k, handleKVGet(log, cfg, st, ws, templateKey("workers/{id}/"+k)))
		r.Put("/v1/workers/{id}/"+k, handleKVPut(log, cfg, st, templateKey("workers/{id}/"+k)))
		r.Patch("/v1/workers/{id}/"+k, handleKVPatch(log, cfg, st, templateKey("workers/{id}/"+k)))
	}
	for _, k := range []string{"queue", "assignments", "metrics"} {
		r.Get("/v1/coordination/"+k, handleKVGet(log, cfg, st, ws, templateKey("coordination/"+k)))
		r.Put("/v1/coordination/"+k, handleKVPut(log, cfg, st, templateKey("coordination/"+k)))
		r.Patch("/v1/coordination/"+k, handleKVPatch(log, cfg, st, templateKey("coordination/"+k)))
	}

	// Propagation: change streams and the instance caches (watch.go).
	r.Get("/v1/watch", handleWatch(log, cfg, st, s.prop))
	r.Post("/v1/cache/invalidate", handleCacheInvalidate(log, cfg, s.prop))
}

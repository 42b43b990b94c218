import { ExecutionSnapshots, executionStatusFrame } from './execution-snapshots';

describe('ExecutionSnapshots', () => {
  it('keeps every field Django published for the execution, but not delivery fields', () => {
    const s = new ExecutionSnapshots();
    s.apply('execution.5', { type: 'execution_update', execution_id: 5, status: 'running', trigger_type: 'manual', message: 'Started', channel: 'x', position: 9 });
    s.apply('execution.5', { type: 'execution_status', data: { status: 'running', trigger_user: 'alice', successful_steps: 2 } });
    const snap = s.get(5);
    expect(snap).toMatchObject({ execution_id: 5, status: 'running', trigger_type: 'manual', trigger_user: 'alice', message: 'Started', successful_steps: 2 });
    expect(snap).not.toHaveProperty('channel');
    expect(snap).not.toHaveProperty('position');
    expect(snap).not.toHaveProperty('type');
  });

  it('merges step_progress into the step: a later event without output keeps the output; counts follow', () => {
    const s = new ExecutionSnapshots();
    s.apply('execution.6', { type: 'step_progress', execution_id: 6, step_id: 1, step_name: 'build', status: 'running', output: 'compiling' });
    s.apply('execution.6', { type: 'step_progress', execution_id: 6, step_id: 1, step_name: 'build', status: 'success', execution_time: 3 });
    s.apply('execution.6', { type: 'step_progress', execution_id: 6, step_name: 'test', status: 'failed', error_message: 'exit 1' });
    const snap = s.get(6);
    expect(snap.steps).toEqual([
      { step_id: 1, id: 1, step_name: 'build', name: 'build', status: 'success', output: 'compiling', execution_time: 3 },
      { step_name: 'test', name: 'test', status: 'failed', error_message: 'exit 1' },
    ]);
    expect(snap).toMatchObject({ completed_steps: 2, successful_steps: 1, failed_steps: 1, total_steps: 2, current_step: null });
  });

  it('puts the snapshot at the top level of execution_status and under data', () => {
    const s = new ExecutionSnapshots();
    s.apply('execution.7', { type: 'execution_update', status: 'failed', pipeline_name: 'deploy' });
    const frame = executionStatusFrame(s.get(7), 42);
    expect(frame).toMatchObject({ type: 'execution_status', execution_id: 7, status: 'failed', pipeline_name: 'deploy', position: 42, data: { execution_id: 7, status: 'failed' } });
  });
});

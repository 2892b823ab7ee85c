import { Navigate, Route, Routes } from 'react-router-dom';
import { AppLayout } from './components/AppLayout';
import { AccountPage } from './pages/AccountPage';
import { AuthProvider, RequireAuth } from './lib/auth';
import { AnalyzePage } from './pages/AnalyzePage';
import { ApiKeysPage } from './pages/ApiKeysPage';
import { HistoryPage } from './pages/HistoryPage';
import { JobDetailPage } from './pages/JobDetailPage';
import { JobsPage } from './pages/JobsPage';
import { LoginPage } from './pages/LoginPage';
import { ModelDetailPage } from './pages/ModelDetailPage';
import { ModelsPage } from './pages/ModelsPage';
import { NotFoundPage } from './pages/NotFoundPage';
import { ResultPage } from './pages/ResultPage';
import { SignupPage } from './pages/SignupPage';
import { StudiesPage } from './pages/StudiesPage';
import { StudyPage } from './pages/StudyPage';

export function AppRoutes() {
  return (
    <AuthProvider>
      <Routes>
        <Route path="/login" element={<LoginPage />} />
        <Route path="/signup" element={<SignupPage />} />
        <Route
          element={
            <RequireAuth>
              <AppLayout />
            </RequireAuth>
          }
        >
          <Route index element={<Navigate to="/analyze" replace />} />
          <Route path="/analyze" element={<AnalyzePage />} />
          <Route path="/history" element={<HistoryPage />} />
          <Route path="/history/:id" element={<ResultPage />} />
          <Route path="/studies" element={<StudiesPage />} />
          <Route path="/studies/:id" element={<StudyPage />} />
          <Route path="/jobs" element={<JobsPage />} />
          <Route path="/jobs/:id" element={<JobDetailPage />} />
          <Route path="/models" element={<ModelsPage />} />
          <Route path="/models/:key" element={<ModelDetailPage />} />
          <Route path="/api-keys" element={<ApiKeysPage />} />
          <Route path="/account" element={<AccountPage />} />
          <Route path="*" element={<NotFoundPage />} />
        </Route>
      </Routes>
    </AuthProvider>
  );
}
